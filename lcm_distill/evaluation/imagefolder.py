"""Reading an image folder with captions (``metadata.jsonl`` beside the images, as datasets' imagefolder writes it)
for evaluation: plain PIL, no ``datasets`` import, so the evaluation command stays fast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def imagefolder_rows(root: str | Path, split: str = "test") -> tuple[Path, list[dict]]:
    """(folder, rows of its metadata.jsonl) of an imagefolder split (``root/split`` or ``root`` itself)."""
    root = Path(root)
    folder = root / split if (root / split / "metadata.jsonl").exists() else root
    meta = folder / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: expected an imagefolder with metadata.jsonl (or {split}/ inside).")
    rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{meta} lists no images.")
    return folder, rows


def iter_image_batches(folder: Path, rows: list[dict], batch_size: int = 256) -> Iterator[torch.Tensor]:
    """The rows' images as (B, 3, H, W) batches in [0, 1], read ``batch_size`` at a time (30k reference images at
    512 px would be 94 GB as one float tensor). All images must share one size: a reference set is compared at a
    fixed size (``lcm-distill-reference --size`` prepares one)."""
    from PIL import Image

    size = None
    for start in range(0, len(rows), batch_size):
        arrays = []
        for r in rows[start : start + batch_size]:
            image = Image.open(folder / r["file_name"]).convert("RGB")
            size = size or image.size
            if image.size != size:
                raise ValueError(f"{folder}: {r['file_name']} is {image.size[0]}x{image.size[1]}, the first image "
                                 f"{size[0]}x{size[1]}; a reference set needs one size: prepare it with "
                                 "lcm-distill-reference --size N.")  # fmt: skip
            arrays.append(np.asarray(image))
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def read_imagefolder(root: str | Path, split: str = "test", limit: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images (N, 3, H, W) in [0, 1] and captions of an imagefolder split (``root/split`` or ``root`` itself), all in
    memory (small sets; the evaluation command streams with :func:`iter_image_batches`)."""
    folder, rows = imagefolder_rows(root, split)
    rows = rows[:limit] if limit is not None else rows
    return torch.cat(list(iter_image_batches(folder, rows))), [str(r.get("text", "")) for r in rows]
