"""Filters on per-sample metadata, as LAION-style data carries it (img2dataset json, LAION parquet columns).

A filter applies only when the sample has the field: shards without json, or a json without ``pwatermark``, pass.
Width/height prefer the *original* image size (img2dataset writes ``original_width`` for the source image and
``width`` for the resized one it stored; LAION parquet has ``WIDTH``), because the paper's subsets were selected on
the source images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WIDTH_FIELDS = ("original_width", "WIDTH", "width")
HEIGHT_FIELDS = ("original_height", "HEIGHT", "height")
WATERMARK_FIELDS = ("pwatermark", "PWATERMARK")
UNSAFE_FIELDS = ("punsafe", "PUNSAFE")
AESTHETIC_FIELDS = ("aesthetic", "AESTHETIC_SCORE", "aesthetic_score")
METADATA_FIELDS = WIDTH_FIELDS + HEIGHT_FIELDS + WATERMARK_FIELDS + UNSAFE_FIELDS + AESTHETIC_FIELDS


def _first(meta: Mapping[str, Any], names: tuple[str, ...]) -> float | None:
    for name in names:
        value = meta.get(name)
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            return None  # an unparsable value counts as missing: the filter does not apply
    return None


@dataclass(frozen=True)
class MetadataFilter:
    """The data.min_width / min_height / max_pwatermark / max_punsafe / min_aesthetic filters of a run."""

    min_width: int = 0
    min_height: int = 0
    max_pwatermark: float | None = None
    min_aesthetic: float | None = None
    max_punsafe: float | None = None  # LAION's NSFW probability (img2dataset keeps it with save_additional_columns)

    @classmethod
    def from_config(cls, cfg) -> MetadataFilter:
        return cls(cfg.min_width, cfg.min_height, cfg.max_pwatermark, cfg.min_aesthetic, cfg.max_punsafe)

    @property
    def active(self) -> bool:
        return (
            bool(self.min_width or self.min_height)
            or self.max_pwatermark is not None
            or self.max_punsafe is not None
            or (self.min_aesthetic is not None)
        )

    def rejects(self, meta: Mapping[str, Any] | None) -> str | None:
        """The name of the first failing filter (for counts and logs), or None when the sample passes."""
        if not meta:
            return None
        width, height = _first(meta, WIDTH_FIELDS), _first(meta, HEIGHT_FIELDS)
        if self.min_width and width is not None and width < self.min_width:
            return "min_width"
        if self.min_height and height is not None and height < self.min_height:
            return "min_height"
        watermark = _first(meta, WATERMARK_FIELDS)
        if self.max_pwatermark is not None and watermark is not None and watermark > self.max_pwatermark:
            return "max_pwatermark"
        unsafe = _first(meta, UNSAFE_FIELDS)
        if self.max_punsafe is not None and unsafe is not None and unsafe > self.max_punsafe:
            return "max_punsafe"
        aesthetic = _first(meta, AESTHETIC_FIELDS)
        if self.min_aesthetic is not None and aesthetic is not None and aesthetic < self.min_aesthetic:
            return "min_aesthetic"
        return None


ORIGINAL_WIDTH_FIELDS = ("original_width", "WIDTH")  # not "width": img2dataset's size of the stored, resized image
ORIGINAL_HEIGHT_FIELDS = ("original_height", "HEIGHT")


def original_size(meta: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(height, width) of the source image before any resize, from img2dataset's json or LAION's parquet columns;
    None when the metadata does not say (the stored image's size is then the original)."""
    if not meta:
        return None
    width, height = _first(meta, ORIGINAL_WIDTH_FIELDS), _first(meta, ORIGINAL_HEIGHT_FIELDS)
    return None if width is None or height is None else (int(height), int(width))
