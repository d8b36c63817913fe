"""Data sources -> one sample schema {"pixel_values": (3, R, R) in [-1, 1], "caption": str}."""

from .hf import CaptionedImages, load_hf_dataset
from .loader import DataPosition, ResumableBatches, collate_skipping


def build_dataset(cfg, seed: int = 0):
    """The map-style dataset for ``cfg`` (a DataConfig)."""
    if cfg.source == "hf":
        return CaptionedImages(load_hf_dataset(cfg), cfg, seed)
    raise ValueError(f"data.source={cfg.source!r} is not supported; use 'hf'.")


__all__ = [
    "CaptionedImages",
    "DataPosition",
    "ResumableBatches",
    "build_dataset",
    "collate_skipping",
    "load_hf_dataset",
]
