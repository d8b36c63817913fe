"""New domains for LCF experiments: images the digits testbed's LCM never saw, with captions and held-out splits.

``python -m lcm_distill.testbed.domains --out outputs/lcf-domains`` writes one imagefolder per domain (seconds):

- ``letters``: capital letters A-J rendered from the TrueType font that ships inside Pillow (``ImageFont.load_default``)
  in the six testbed colours on a light grey background, jittered in position, size and rotation. Captions
  "a red letter c": "letter" and the letter names are words the testbed text encoder was never trained on.
- ``shapes``: five drawn shapes (circle, square, triangle, cross, ring) in the six colours on a mid-grey background,
  jittered in position and size. Captions "a red circle" (unseen words).
- ``shapes_known``: the same images as ``shapes``, captioned with words the encoder knows ("a red digit 0" for a
  circle, ... "digit 4" for a ring), so known-word and new-word captions can be compared on identical pixels.
- ``outlines`` (harder): the digits 0-9, but as thin coloured outlines (the glyph hollow) on white - the other
  background polarity and another stroke style than the testbed's filled strokes on black; known-word captions
  "a red digit 7", so what must change is the style, not the vocabulary.
- ``photos`` (harder): real photographs - square crops (25-60% of the short side, random flips) of nine photos and
  textures bundled inside scikit-image's wheel (astronaut, coffee, cat, rocket, stained tissue, Hubble deep field,
  brick, grass, gravel), captioned "a photo of a cat" with words the testbed never saw, no colour axis. Natural
  image statistics the testbed VAE was never trained on: its round-trip floor is far from zero.

Every domain differs from the training data (coloured strokes on black) in shapes, background and captions. The
train and test splits use disjoint jitter (or crop) draws (seeded), so the same call writes byte-identical files.

Each domain folder can hold its own prompt-accuracy classifier (``classifier/``, the testbed's digit/colour
architecture with the object index as the "digit"; :func:`write_domain_classifier`), so LCF's effect on whether an
image shows the object and colour its caption asks for - not only on FID - is measurable on new-word captions.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .digits import COLOR_NAMES, COLORS

DIGIT_NAMES = tuple(str(d) for d in range(10))

LETTERS = tuple("ABCDEFGHIJ")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
SUPERSAMPLE = 4  # draw at 4x and downsample with a box filter: anti-aliased edges like the digits' bilinear strokes


def _letter(draw, cx: float, cy: float, s: float, name: str, fill, background=None) -> None:
    from PIL import ImageFont

    font = ImageFont.load_default(size=max(8, round(s * 1.6)))
    draw.text((cx, cy), name, fill=fill, font=font, anchor="mm")


def _shape(draw, cx: float, cy: float, s: float, name: str, fill, background=None) -> None:
    r = s / 2
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "circle":
        draw.ellipse(box, fill=fill)
    elif name == "square":
        draw.rectangle(box, fill=fill)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * math.sqrt(3) / 2, cy + r / 2), (cx - r * math.sqrt(3) / 2, cy + r / 2)],
                     fill=fill)  # fmt: skip
    elif name == "cross":
        w = r / 2.5
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    elif name == "ring":
        draw.ellipse(box, outline=fill, width=max(1, round(r / 2.5)))
    else:  # pragma: no cover - names come from SHAPES
        raise ValueError(name)


def _outline(draw, cx: float, cy: float, s: float, name: str, fill, background) -> None:
    """A digit's outline only: the glyph filled with the background and stroked in the colour (thin, hollow)."""
    from PIL import ImageFont

    font = ImageFont.load_default(size=max(8, round(s * 1.6)))
    draw.text((cx, cy), name, fill=background, font=font, anchor="mm", stroke_width=max(2, round(s / 14)),
              stroke_fill=fill)  # fmt: skip


# scikit-image's bundled photos (skimage.data, inside the wheel: no download): name -> (loader, caption noun)
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut", "an astronaut"), "coffee": ("coffee", "a cup of coffee"), "cat": ("chelsea", "a cat"),
    "rocket": ("rocket", "a rocket"), "tissue": ("immunohistochemistry", "stained tissue"),
    "galaxies": ("hubble_deep_field", "galaxies"), "bricks": ("brick", "a brick wall"), "grass": ("grass", "grass"),
    "gravel": ("gravel", "gravel"),
}  # fmt: skip


def _photo_source(name: str):
    """The whole photo ``name`` as a PIL RGB image (grey textures as RGB), loaded once per process."""
    from PIL import Image

    cache = _photo_source.__dict__.setdefault("cache", {})
    if name not in cache:
        try:
            import skimage.data
        except ImportError as e:  # pragma: no cover - scikit-image is in requirements.txt
            raise ImportError("the 'photos' LCF domain crops scikit-image's bundled photos: pip install "
                              "scikit-image (requirements.txt pins it)") from e  # fmt: skip
        cache[name] = Image.fromarray(getattr(skimage.data, PHOTOS[name][0])()).convert("RGB")
    return cache[name]


@dataclass(frozen=True)
class DomainSpec:
    """How a domain draws and captions: ``names`` are its objects; ``colors`` the colour names crossed with them
    (``("",)``: one uncoloured prompt per object); ``caption(color, name)``; ``per_prompt_scale`` multiplies the
    images per prompt so that an uncoloured domain has about as many images as a coloured one."""

    names: tuple[str, ...]
    caption: Callable[[str, str], str]
    background: tuple[int, int, int] = (0, 0, 0)
    paint: Callable | None = None  # (draw, cx, cy, size, name, fill, background) on a supersampled canvas
    colors: tuple[str, ...] = COLOR_NAMES
    pixel_seed: int = 0  # the jitter stream: two domains with one seed draw identical geometry
    per_prompt_scale: int = 1


SPECS: dict[str, DomainSpec] = {
    "letters": DomainSpec(LETTERS, lambda c, n: f"a {c} letter {n.lower()}", (215, 215, 215),
                          _letter, pixel_seed=0),
    "shapes": DomainSpec(SHAPES, lambda c, n: f"a {c} {n}", (128, 128, 128),
                         _shape, pixel_seed=1),
    "shapes_known": DomainSpec(SHAPES, lambda c, n: f"a {c} digit {SHAPES.index(n)}", (128, 128, 128),
                               _shape, pixel_seed=1),
    # the digits themselves, drawn the other way round: thin coloured outlines on white (known-word captions)
    "outlines": DomainSpec(DIGIT_NAMES, lambda c, n: f"a {c} digit {n}", (250, 250, 250), _outline, pixel_seed=2),
    # real photographs: square crops of scikit-image's bundled photos and textures, no colour axis
    "photos": DomainSpec(tuple(PHOTOS), lambda c, n: f"a photo of {PHOTOS[n][1]}", colors=("",), pixel_seed=3,
                         per_prompt_scale=6),
}
DOMAINS = tuple(SPECS)
HARD_DOMAINS = ("outlines", "photos")  # issue 24: unlike the digits in polarity and stroke, or real photographs


def _photo_crop(rng: np.random.Generator, name: str, size: int):
    """A random square crop (25-60% of the photo's short side), flipped left-right half the time, box-filtered to
    ``size``: textures and parts of real photos at the testbed's resolution."""
    from PIL import Image

    src = _photo_source(name)
    side = round(min(src.size) * rng.uniform(0.25, 0.6))
    x, y = rng.integers(0, src.size[0] - side + 1), rng.integers(0, src.size[1] - side + 1)
    img = src.crop((int(x), int(y), int(x) + side, int(y) + side))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img.resize((size, size), Image.BOX)


def render_domain(domain: str, split: str, per_prompt: int, size: int = 16, seed: int = 0):
    """(images uint8 (N, size, size, 3), captions): every (colour, object) prompt ``per_prompt`` times (times the
    domain's ``per_prompt_scale``), colour-major within a round."""
    from PIL import Image, ImageDraw

    if domain not in SPECS:
        raise ValueError(f"domain={domain!r} is not one of {list(DOMAINS)}.")
    spec = SPECS[domain]
    rng = np.random.default_rng([seed, spec.pixel_seed, 0 if split == "train" else 1])
    big = size * SUPERSAMPLE
    images, captions = [], []
    for _ in range(per_prompt * spec.per_prompt_scale):
        for color in spec.colors:
            for name in spec.names:
                captions.append(spec.caption(color, name))
                if domain == "photos":
                    images.append(np.asarray(_photo_crop(rng, name, size)))
                    continue
                s = big * rng.uniform(0.45, 0.7)
                cx, cy = big / 2 + rng.uniform(-0.15, 0.15, size=2) * big
                img = Image.new("RGB", (big, big), spec.background)
                fill = tuple(round(255 * v) for v in COLORS[color])
                spec.paint(ImageDraw.Draw(img), cx, cy, s, name, fill, spec.background)
                if domain in ("letters", "outlines"):
                    img = img.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR, fillcolor=spec.background)
                images.append(np.asarray(img.resize((size, size), Image.BOX)))
    return np.stack(images), captions


def write_domain(root: str | Path, domain: str, train_per_prompt: int = 20, test_per_prompt: int = 10,
                 size: int = 16, seed: int = 0) -> Path:  # fmt: skip
    """Write ``root/train`` and ``root/test`` as Hugging Face imagefolders (PNG + metadata.jsonl)."""
    from PIL import Image

    root = Path(root)
    for split, n in (("train", train_per_prompt), ("test", test_per_prompt)):
        images, captions = render_domain(domain, split, n, size, seed)
        out = root / split
        out.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, (arr, text) in enumerate(zip(images, captions, strict=True)):
            name = f"{i:05d}.png"
            Image.fromarray(arr, mode="RGB").save(out / name, optimize=False)
            lines.append(json.dumps({"file_name": name, "text": text}))
        (out / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def parse_domain_caption(domain: str, caption: str) -> tuple[int, int] | None:
    """(object index, colour index) a caption of ``domain`` asks for, or None when it is not of that form."""
    spec = SPECS[domain]
    for ci, color in enumerate(spec.colors):
        for oi, name in enumerate(spec.names):
            if caption.strip().lower() == spec.caption(color, name):
                return oi, ci
    return None


def vae_roundtrip(vae, images):
    """decode(encode(x).mean) of images (N, 3, H, W) in [0, 1]: what a frozen VAE can draw of them at best."""
    import torch

    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mean
        return (vae.decode(latents).sample.clamp(-1, 1) + 1) / 2


def write_domain_classifier(root: str | Path, domain: str, vae_dir: str | Path | None = None,
                            steps: int = 800) -> dict[str, float]:  # fmt: skip
    """Train the prompt-accuracy classifier of a written domain on its train split into ``root/classifier`` (with
    ``domain.json`` naming the caption form) and return its accuracy on the held-out test split.

    With ``vae_dir`` (a diffusers VAE folder: the LCM's) it trains and tests on VAE round trips of the images. Why:
    the LCM draws through its frozen VAE, and the testbed VAE - trained on coloured strokes on black - renders a
    grey or light background as a dark, colour-tinted field; a classifier of the clean renders would call every
    generated image wrong. On round trips it asks the fair question: does the image show the captioned object and
    colour as well as this VAE can draw them?
    """
    import torch

    from ..evaluation.imagefolder import read_imagefolder
    from .digits import DigitsSplit
    from .train import ClassifierTrainConfig, classifier_accuracy, train_classifier

    root = Path(root)
    vae = None
    if vae_dir is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir).eval()

    def split(name: str) -> DigitsSplit:
        images, captions = read_imagefolder(root, name)
        labels = [parse_domain_caption(domain, c) for c in captions]
        if any(lab is None for lab in labels):
            raise ValueError(f"{root / name}: captions are not of the {domain!r} form (e.g. {captions[0]!r})")
        if vae is not None:
            images = torch.cat([vae_roundtrip(vae, images[i : i + 256]) for i in range(0, len(images), 256)])
        lab = torch.tensor(labels)
        return DigitsSplit(images, captions, lab[:, 0], lab[:, 1], [])

    net = train_classifier(split("train"), ClassifierTrainConfig(steps=steps))
    net.save(root / "classifier")
    meta = {"domain": domain, "vae": None if vae_dir is None else str(vae_dir)}
    (root / "classifier" / "domain.json").write_text(json.dumps(meta) + "\n")
    return classifier_accuracy(net, split("test"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_distill.testbed.domains", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/lcf-domains", help="one folder per domain inside")
    p.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--train-per-prompt", type=int, default=20)
    p.add_argument("--test-per-prompt", type=int, default=10)
    p.add_argument("--classifier", action="store_true", help="also train each domain's prompt-accuracy classifier")
    p.add_argument("--vae", default=None, help="with --classifier: train it on round trips through this VAE folder "
                   "(the LCM's vae/), so it judges what that VAE can draw")
    args = p.parse_args(argv)
    for d in args.domains:
        root = write_domain(Path(args.out) / d, d, args.train_per_prompt, args.test_per_prompt, args.size)
        counts = {split: len(list((root / split).glob("*.png"))) for split in ("train", "test")}
        print(f"[domains] {root}: {counts['train']} train, {counts['test']} test images")
        if args.classifier:
            print(f"[domains] {root}/classifier: held-out accuracy {write_domain_classifier(root, d, args.vae)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
