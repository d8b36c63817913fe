"""Reading an image folder with captions (``metadata.jsonl`` beside the images, as datasets' imagefolder writes it)
for evaluation: plain PIL, no ``datasets`` import, so the evaluation command stays fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def read_imagefolder(root: str | Path, split: str = "test", limit: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images (N, 3, H, W) in [0, 1] and captions of an imagefolder split (``root/split`` or ``root`` itself).

    Plain PIL reading (no ``datasets`` import) so the evaluation command stays fast; works for any imagefolder
    with a metadata.jsonl holding ``file_name`` and ``text``.
    """
    from PIL import Image

    root = Path(root)
    folder = root / split if (root / split / "metadata.jsonl").exists() else root
    meta = folder / "metadata.jsonl"
    if not meta.exists():
        raise FileNotFoundError(f"{meta} not found: expected an imagefolder with metadata.jsonl (or {split}/ inside).")
    rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:limit] if limit is not None else rows
    if not rows:
        raise ValueError(f"{meta} lists no images.")
    arrays = [np.asarray(Image.open(folder / r["file_name"]).convert("RGB")) for r in rows]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    return images, [str(r.get("text", "")) for r in rows]
