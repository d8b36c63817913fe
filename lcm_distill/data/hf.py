"""Hugging Face ``datasets`` source: a hub id, a local imagefolder (with metadata.jsonl), or parquet/csv/json files.

Images are read undecoded and opened here, so one corrupt file is skipped and counted instead of crashing the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import DataConfig
from .batch import Sample, decode_sample
from .filters import METADATA_FIELDS, MetadataFilter
from .transforms import sample_rng

logger = logging.getLogger(__name__)

FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def open_hf_dataset(cfg: DataConfig, streaming: bool = False):
    """The split named by ``data.dataset`` (map-style, or an IterableDataset when streaming), image column undecoded."""
    import datasets

    path = Path(cfg.dataset)
    if path.exists():
        if path.is_dir():
            parquet = sorted(str(p) for p in path.rglob("*.parquet"))
            ds = (
                datasets.load_dataset("parquet", data_files=parquet, split="train", streaming=streaming)
                if parquet
                else datasets.load_dataset("imagefolder", data_dir=str(path), split=cfg.split, streaming=streaming)
            )
        elif path.suffix in FILE_BUILDERS:
            ds = datasets.load_dataset(
                FILE_BUILDERS[path.suffix], data_files=str(path), split="train", streaming=streaming
            )
        else:
            raise ValueError(f"data.dataset={cfg.dataset!r}: a file must be .parquet, .csv, .json or .jsonl.")
    else:  # a hub id; offline, its cached snapshot (a hub repo layout, so datasets picks configs and splits)
        from ..hub import dataset_location

        location = dataset_location(cfg.dataset, cfg.config_name)
        ds = datasets.load_dataset(location, cfg.config_name, split=cfg.split, streaming=streaming)
    columns = list(ds.features) if ds.features is not None else ds.column_names
    for key, col in (("data.image_column", cfg.image_column), ("data.caption_column", cfg.caption_column)):
        if col not in columns:
            raise ValueError(f"{key}={col!r} is not a column of {cfg.dataset}; its columns are {columns}.")
    if isinstance(ds.features[cfg.image_column], datasets.Image):
        ds = ds.cast_column(cfg.image_column, datasets.Image(decode=False))
    return ds


def load_hf_dataset(cfg: DataConfig):
    """The map-style split named by ``data.dataset``: image column undecoded, metadata filters applied."""
    return filtered_hf_dataset(cfg)[0]


def filtered_hf_dataset(cfg: DataConfig):
    """(rows, how many rows the metadata filters removed): :func:`load_hf_dataset` with the count it reports."""
    ds = open_hf_dataset(cfg)
    filt = MetadataFilter.from_config(cfg)
    fields = [c for c in METADATA_FIELDS if c in ds.column_names]
    before = len(ds)
    if filt.active and fields:
        ds = ds.filter(lambda *values: filt.rejects(dict(zip(fields, values, strict=True))) is None,
                       input_columns=fields)  # fmt: skip
        logger.info("data filters kept %d of %d rows of %s", len(ds), before, cfg.dataset)
    elif filt.active:
        logger.warning("data.min_*/max_* filters are set but %s has none of their columns (%s); nothing is filtered",
                       cfg.dataset, ", ".join(METADATA_FIELDS))  # fmt: skip
    filtered = before - len(ds)
    if cfg.max_samples is not None:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    if len(ds) == 0:
        raise ValueError(
            f"data.dataset={cfg.dataset!r} (split {cfg.split!r}) has no rows"
            + (f" ({filtered} removed by the data.min_*/max_* filters)" if filtered else "")
            + "; point it at captioned images."
        )
    return ds, filtered


class CaptionedImages(torch.utils.data.Dataset):
    """Map-style dataset yielding {"pixel_values", "caption"} or None for an unreadable sample."""

    def __init__(self, rows, cfg: DataConfig, seed: int = 0, filtered_rows: int = 0) -> None:
        self.rows, self.cfg, self.seed = rows, cfg, seed
        self.filtered_rows = filtered_rows  # removed by the metadata filters (reported as filtered_samples)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int] | int) -> Sample | None:
        """``key`` is (epoch, index) from :class:`~lcm_distill.data.loader.ResumableBatches`, or a bare index."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        row = self.rows[int(index)]
        return decode_sample(row[self.cfg.image_column], row[self.cfg.caption_column], self.cfg,
                             sample_rng(self.seed, epoch, int(index)), f"{index} of {self.cfg.dataset}",
                             meta=row)  # fmt: skip  (LAION parquet's WIDTH/HEIGHT: SDXL's original size)
