"""Tiny captioned image folders (Hugging Face imagefolder layout) for tests and smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "stripe")


def make_imagefolder(out_dir: str | Path, n: int = 16, size: int = 16, corrupt: int = 0, seed: int = 0) -> Path:
    """Write ``n`` coloured-shape images with captions (metadata.jsonl) plus ``corrupt`` unreadable .png files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    names = list(COLOURS)
    for i in range(n):
        colour, shape = names[i % len(names)], SHAPES[(i // len(names)) % len(SHAPES)]
        img = np.full((size, size, 3), 245, dtype=np.uint8)
        lo, hi = size // 4, 3 * size // 4
        if shape == "square":
            img[lo:hi, lo:hi] = COLOURS[colour]
        else:
            img[:, lo:hi] = COLOURS[colour]
        img = np.clip(img.astype(np.int16) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
        name = f"img_{i:04d}.png"
        Image.fromarray(img).save(out / name)
        rows.append({"file_name": name, "text": f"a {colour} {shape}"})
    for j in range(corrupt):
        name = f"corrupt_{j:02d}.png"
        (out / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
        rows.append({"file_name": name, "text": "a broken file"})
    with open(out / "metadata.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return out
