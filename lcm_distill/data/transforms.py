"""Image and caption transforms with explicit per-sample randomness.

Each sample's crop/flip/caption choice comes from a NumPy generator seeded by (seed, epoch, index), so a resumed
or multi-process run draws exactly what an uninterrupted single-process run draws.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def prepare_image(
    image: Image.Image,
    resolution: int,
    rng: np.random.Generator,
    center_crop: bool = False,
    random_flip: bool = True,
    interpolation: str = "bilinear",
) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB, shorter side resized to ``resolution``, square crop, optional horizontal flip -> (3, R, R) in [-1, 1],
    and the crop's (top, left) in the resized image - SDXL's crop conditioning; after a flip, left is mirrored
    (resized width - left - R), as diffusers' SDXL training scripts do."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), INTERPOLATION[interpolation])
    if center_crop:
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
    else:
        left, top = int(rng.integers(0, nw - resolution + 1)), int(rng.integers(0, nh - resolution + 1))
    image = image.crop((left, top, left + resolution, top + resolution))
    if random_flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = nw - left - resolution
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), (top, left)


def pick_caption(caption: object, rng: np.random.Generator) -> str:
    """A caption column may hold a string or a list of alternatives (pick one); None becomes ""."""
    if caption is None:
        return ""
    if isinstance(caption, list | tuple):
        options = [c for c in caption if isinstance(c, str)]
        return options[int(rng.integers(0, len(options)))] if options else ""
    return str(caption)
