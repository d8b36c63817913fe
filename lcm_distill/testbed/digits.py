"""The coloured-digits testbed data: scikit-learn's handwritten digits rendered as small captioned RGB images.

Why this data: it ships inside a PyPI wheel (no download, no licence question), it has real handwriting variation
(1,797 scans from 43 writers), and captions of the form "a red digit 7" give a two-attribute text condition whose
fulfilment a tiny classifier can check exactly. That makes classifier-free guidance measurable (prompt accuracy)
and FID meaningful on a CPU in seconds.

Layout written by :func:`write_imagefolder` (the Hugging Face ``imagefolder`` convention the training code reads)::

    root/train/metadata.jsonl   {"file_name": "0000_red.png", "text": "a red digit 0"}, one line per image
    root/train/*.png
    root/test/...

The split is by source scan (a handwritten sample never appears in both splits) and is fixed by a seed, so the
same call always writes byte-identical files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Saturated, well separated colours: the prompt-accuracy classifier must tell them apart after a lossy VAE.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.15, 0.1),
    "green": (0.1, 0.85, 0.2),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "cyan": (0.1, 0.9, 0.95),
    "magenta": (0.95, 0.15, 0.9),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
DIGITS: tuple[int, ...] = tuple(range(10))
CAPTION_TEMPLATE = "a {color} digit {digit}"
_CAPTION_RE = re.compile(r"^a (?P<color>[a-z]+) digit (?P<digit>[0-9])$")
SPLITS = ("train", "test")
STYLES = ("plain", "inverted")


@dataclass(frozen=True)
class DigitsConfig:
    """How the testbed images are rendered and split.

    size: output side in pixels (16 gives 8x8 latents with the testbed's factor-2 VAE: the regime in which an LCD
    step costs ~0.1-0.3 s on a laptop CPU). test_fraction: share of source scans held out. seed: fixes the split.
    style: "plain" (coloured stroke on black: what the teachers were trained on) or "inverted" (dark stroke on a
    coloured background, same captions): a style the teachers never saw, for LCF fine-tuning experiments.
    """

    size: int = 16
    test_fraction: float = 0.2
    seed: int = 0
    style: str = "plain"


def caption_for(digit: int, color: str) -> str:
    """The caption of a rendered image; :func:`parse_caption` inverts it."""
    if color not in COLORS:
        raise ValueError(f"color={color!r} is not a testbed colour; use one of {COLOR_NAMES}.")
    if digit not in DIGITS:
        raise ValueError(f"digit={digit!r} must be an int in 0..9.")
    return CAPTION_TEMPLATE.format(color=color, digit=digit)


def parse_caption(caption: str) -> tuple[int, int] | None:
    """(digit, colour index) asked for by a testbed caption, or None when the text is not of that form."""
    m = _CAPTION_RE.match(caption.strip().lower())
    if m is None or m.group("color") not in COLORS:
        return None
    return int(m.group("digit")), COLOR_NAMES.index(m.group("color"))


def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float images in [0, 1] (N, 8, 8) and integer labels (N,)."""
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as err:  # pragma: no cover - exercised only without scikit-learn
        raise ModuleNotFoundError(
            "The digits testbed needs scikit-learn (its wheel ships the data): pip install scikit-learn"
        ) from err
    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


def split_indices(num: int, config: DigitsConfig) -> dict[str, np.ndarray]:
    """Seeded split of source-scan indices into train/test (sorted, disjoint, covering 0..num-1)."""
    if not 0.0 < config.test_fraction < 1.0:
        raise ValueError(f"test_fraction={config.test_fraction} must lie strictly between 0 and 1.")
    perm = np.random.default_rng(config.seed).permutation(num)
    n_test = round(num * config.test_fraction)
    return {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}


def render(
    masks: np.ndarray | torch.Tensor, colors: Sequence[str], size: int = 16, style: str = "plain"
) -> torch.Tensor:
    """Colour grey 8x8 digit masks: (N, 8, 8) in [0, 1] -> (N, 3, size, size) float images in [0, 1].

    Bilinear upsampling keeps the strokes' anti-aliasing. "plain": the background stays black, so the colour of an
    image is exactly the colour of its stroke; "inverted": the colour fills the background and the stroke is dark.
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not supported; use one of {STYLES}.")
    m = torch.as_tensor(np.asarray(masks), dtype=torch.float32).unsqueeze(1)
    if size != m.shape[-1]:
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    if style == "inverted":
        m = 1.0 - m
    rgb = torch.tensor([COLORS[c] for c in colors], dtype=torch.float32).view(-1, 3, 1, 1)
    return (m * rgb).clamp(0.0, 1.0)


@dataclass
class DigitsSplit:
    """One split in memory: images (N, 3, H, W) in [0, 1], captions, digit labels and colour indices."""

    images: torch.Tensor
    captions: list[str]
    digits: torch.Tensor
    colors: torch.Tensor
    file_names: list[str]


def build_split(split: str, config: DigitsConfig | None = None) -> DigitsSplit:
    """Render one split: every held scan in every colour (balanced over the 60 digit/colour prompts)."""
    config = config or DigitsConfig()
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}.")
    masks, labels = load_source_digits()
    idx = split_indices(len(labels), config)[split]
    n_col = len(COLOR_NAMES)
    src = np.repeat(idx, n_col)
    cols = [COLOR_NAMES[i % n_col] for i in range(len(src))]
    images = render(masks[src], cols, config.size, config.style)
    digits = torch.as_tensor(labels[src])
    colors = torch.tensor([COLOR_NAMES.index(c) for c in cols])
    captions = [caption_for(int(d), c) for d, c in zip(digits, cols, strict=True)]
    names = [f"{int(s):04d}_{c}.png" for s, c in zip(src, cols, strict=True)]
    return DigitsSplit(images, captions, digits, colors, names)


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, rounding like PIL does on save."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_imagefolder(root: str | Path, config: DigitsConfig | None = None, splits: Sequence[str] = SPLITS) -> Path:
    """Write the splits as a Hugging Face imagefolder (PNG + metadata.jsonl per split); returns ``root``."""
    from PIL import Image

    config = config or DigitsConfig()
    root = Path(root)
    for split in splits:
        data = build_split(split, config)
        out = root / split
        out.mkdir(parents=True, exist_ok=True)
        pixels = to_uint8_hwc(data.images)
        lines = []
        for arr, name, caption in zip(pixels, data.file_names, data.captions, strict=True):
            Image.fromarray(arr, mode="RGB").save(out / name, optimize=False)
            lines.append(json.dumps({"file_name": name, "text": caption}))
        (out / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "testbed.json").write_text(
        json.dumps({"source": "sklearn.datasets.load_digits", **config.__dict__, "colors": COLORS}, indent=1) + "\n"
    )
    return root


