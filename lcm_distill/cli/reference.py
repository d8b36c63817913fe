"""A fixed-size reference set for FID/CLIP evaluation, the way COCO text-to-image results are reported:

    lcm-distill-reference --captions annotations/captions_val2014.json --images val2014 \
        --num 30000 --size 512 --seed 0 --out data/coco2014-30k
    lcm-distill-evaluate --model my-lcm --kind lcm --reference data/coco2014-30k --num-images 30000 \
        --fid-features inception --clip-model ViT-g-14 --clip-pretrained laion2b_s12b_b42k --out outputs/eval/coco

COCO practice (COCO-30k on val2014, or the 5k images of val2017): a seeded random subset of the images, one of each
image's captions chosen at random (seeded) as its prompt, and every image resized (shorter side, bicubic) and
center-cropped to one square size; the generated images are compared with them at that size (the evaluation
command resizes them to the reference size). Everything is read from local files - COCO's own layout (a captions
JSON with ``images`` and ``annotations``) or any folder of images with a ``metadata.jsonl`` / ``.csv`` of
``file_name,text`` - so it works offline. The output is an imagefolder (PNG + ``metadata.jsonl``) plus
``prompts.txt`` and ``reference.json`` (what was selected, how, from where).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

PROTOCOL_FILE = "reference.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcm-distill-reference", description="A fixed-size reference set (images + "
                                "one caption each) for FID / CLIP-score evaluation, selected as COCO results are: "
                                "see docs/evaluation.md.")  # fmt: skip
    p.add_argument("--captions", type=Path, required=True,
                   help="COCO captions JSON (annotations/captions_val2014.json), or metadata.jsonl / .csv with "
                   "file_name and text")  # fmt: skip
    p.add_argument("--images", type=Path, required=True, help="folder holding the images the captions name")
    p.add_argument("--num", type=int, default=None, help="images to select (seeded random subset; default: all)")
    p.add_argument("--size", type=int, default=512, help="square size: shorter side resized (bicubic), center crop")
    p.add_argument("--seed", type=int, default=0, help="selects the images and each image's caption")
    p.add_argument("--out", type=Path, required=True, help="output imagefolder")
    return p


def read_captions(path: Path) -> dict[str, list[str]]:
    """file_name -> its captions, from a COCO captions JSON, a jsonl or a csv (columns file_name, text)."""
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
            raise ValueError(f"--captions {path}: a .json must be COCO captions (keys images, annotations)")
        names = {im["id"]: im["file_name"] for im in data["images"]}
        out: dict[str, list[str]] = {}
        for ann in data["annotations"]:
            if ann["image_id"] in names:
                out.setdefault(names[ann["image_id"]], []).append(" ".join(str(ann["caption"]).split()))
        return out
    if path.suffix == ".jsonl":
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"--captions {path}: use a COCO captions .json, a .jsonl or a .csv")
    out = {}
    for r in rows:
        if "file_name" not in r or "text" not in r:
            raise ValueError(f"--captions {path}: every row needs file_name and text (found {sorted(r)})")
        out.setdefault(str(r["file_name"]), []).append(str(r["text"]))
    return out


def select(captions: dict[str, list[str]], num: int | None, seed: int) -> list[tuple[str, str]]:
    """(file_name, caption) pairs: a seeded random subset of ``num`` images (sorted names first, so the choice does
    not depend on file order), one seeded random caption each."""
    import numpy as np

    names = sorted(captions)
    rng = np.random.default_rng(seed)
    if num is not None:
        if num > len(names):
            raise ValueError(f"--num {num}: the captions name only {len(names)} images")
        names = sorted(names[i] for i in rng.choice(len(names), size=num, replace=False))
    return [(n, captions[n][int(rng.integers(len(captions[n])))]) for n in names]


def center_square(image, size: int):
    """Shorter side to ``size`` (bicubic), then the center ``size`` x ``size`` crop."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def write_reference(pairs: Sequence[tuple[str, str]], images: Path, size: int, out: Path) -> int:
    """Write the selected images at ``size`` as PNG + metadata.jsonl + prompts.txt; returns how many."""
    from PIL import Image
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i, (name, text) in enumerate(tqdm(pairs, desc="reference images", unit="img")):
            file_name = f"{i:06d}.png"
            with Image.open(images / name) as im:
                center_square(im.convert("RGB"), size).save(out / file_name)
            meta.write(json.dumps({"file_name": file_name, "text": text, "source": name}) + "\n")
    (out / "prompts.txt").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return len(pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.captions.is_file():
        parser.error(f"--captions {args.captions}: no such file")
    if not args.images.is_dir():
        parser.error(f"--images {args.images}: no such folder")
    if args.size < 8:
        parser.error(f"--size {args.size}: use a square size in pixels, e.g. 512 or 256")
    if args.num is not None and args.num < 1:
        parser.error(f"--num {args.num}: must be >= 1")
    try:
        pairs = select(read_captions(args.captions), args.num, args.seed)
    except (ValueError, KeyError) as err:
        parser.error(str(err))
    missing = [n for n, _ in pairs if not (args.images / n).is_file()]
    if missing:
        parser.error(f"--images {args.images}: {len(missing)} of the {len(pairs)} selected images are not there "
                     f"(first: {missing[0]}); point --images at the folder the captions name.")  # fmt: skip
    n = write_reference(pairs, args.images, args.size, args.out)
    protocol = {"captions": str(args.captions), "images": str(args.images), "num": n, "size": args.size,
                "seed": args.seed, "resize": "shorter side bicubic, center crop", "caption": "one per image, seeded"}
    (args.out / PROTOCOL_FILE).write_text(json.dumps(protocol, indent=1) + "\n", encoding="utf-8")
    print(f"[reference] wrote {n} images at {args.size}x{args.size} to {args.out} (metadata.jsonl, prompts.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
