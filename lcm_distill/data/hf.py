"""Hugging Face ``datasets`` source: a hub id, a local imagefolder (with metadata.jsonl), or parquet/csv/json files.

Images are read undecoded and opened here, so one corrupt file is skipped and counted instead of crashing the run.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..config import DataConfig
from .transforms import pick_caption, prepare_image, sample_rng

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def load_hf_dataset(cfg: DataConfig):
    """The dataset split named by ``data.dataset`` with its image column left undecoded."""
    import datasets

    path = Path(cfg.dataset)
    if path.exists():
        if path.is_dir():
            parquet = sorted(str(p) for p in path.rglob("*.parquet"))
            ds = (
                datasets.load_dataset("parquet", data_files=parquet, split="train")
                if parquet
                else datasets.load_dataset("imagefolder", data_dir=str(path), split=cfg.split)
            )
        elif path.suffix in FILE_BUILDERS:
            ds = datasets.load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path), split="train")
        else:
            raise ValueError(f"data.dataset={cfg.dataset!r}: a file must be .parquet, .csv, .json or .jsonl.")
    else:
        ds = datasets.load_dataset(cfg.dataset, cfg.config_name, split=cfg.split)
    for key, col in (("data.image_column", cfg.image_column), ("data.caption_column", cfg.caption_column)):
        if col not in ds.column_names:
            raise ValueError(f"{key}={col!r} is not a column of {cfg.dataset}; its columns are {ds.column_names}.")
    if isinstance(ds.features[cfg.image_column], datasets.Image):
        ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
    if cfg.max_samples is not None:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    if len(ds) == 0:
        raise ValueError(
            f"data.dataset={cfg.dataset!r} (split {cfg.split!r}) has no rows; point it at captioned images."
        )
    return ds


def _open_image(value: Any) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            img = Image.open(io.BytesIO(value["bytes"]))
        elif value.get("path"):
            img = Image.open(value["path"])
        else:
            raise ValueError("image entry has neither bytes nor path")
    elif isinstance(value, bytes):
        img = Image.open(io.BytesIO(value))
    elif isinstance(value, str):
        img = Image.open(value)
    else:
        raise ValueError(f"unsupported image value of type {type(value).__name__}")
    img.load()  # decode now so truncated files fail here, inside the guard
    return img


class CaptionedImages(torch.utils.data.Dataset):
    """Map-style dataset yielding {"pixel_values", "caption"} or None for an unreadable sample."""

    def __init__(self, rows, cfg: DataConfig, seed: int = 0) -> None:
        self.rows, self.cfg, self.seed = rows, cfg, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int] | int) -> dict | None:
        """``key`` is (epoch, index) from :class:`~lcm_distill.data.loader.ResumableBatches`, or a bare index."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        row = self.rows[int(index)]
        rng = sample_rng(self.seed, epoch, int(index))
        try:
            image = _open_image(row[self.cfg.image_column])
            pixels = prepare_image(
                image, self.cfg.resolution, rng, self.cfg.center_crop, self.cfg.random_flip, self.cfg.interpolation
            )
        except Exception as err:  # corrupt / unreadable sample: skipped and counted by the collate function
            logger.debug("skipping sample %d of %s: %s", index, self.cfg.dataset, err)
            return None
        return {"pixel_values": pixels, "caption": pick_caption(row[self.cfg.caption_column], rng)}
