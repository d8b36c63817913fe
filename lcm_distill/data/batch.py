"""The one batch schema every data source produces, and the one sample decoder they share.

A source yields samples ``{"pixel_values": (3, R, R) in [-1, 1], "caption": str, "time_ids"}`` (or, from the
latent cache, ``{"latent_mean", "latent_std", "prompt_embeds", "caption"}``, SDXL's also ``pooled_embeds`` and
``time_ids``), and None for a sample that could not be read.
:func:`make_batch` stacks them into a :class:`Batch`; the objective (lcm_distill.objectives) reads only these keys.
Streamed sources add their accounting (:class:`StreamBatch`) for the resumable position.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np
from PIL import Image
from torch import Tensor

logger = logging.getLogger(__name__)

CACHED_KEYS = ("latent_mean", "latent_std", "prompt_embeds")  # samples of the latent cache (data.cache_dir)


class DataError(ValueError):
    """The data source delivers nothing readable (every sample unreadable, filtered out, or no shard at all). A
    ValueError for older callers; the engine reports it apart from non-finite losses, which it is not."""


class Sample(TypedDict, total=False):
    pixel_values: Tensor  # (3, R, R) in [-1, 1]
    caption: str
    latent_mean: Tensor  # cache only: VAE posterior mean x scaling factor (C, h, w)
    latent_std: Tensor
    prompt_embeds: Tensor  # cache only: text-encoder hidden states (77, D)
    pooled_embeds: Tensor  # cache only, SDXL: the second encoder's pooled, projected embedding (P,)
    upscaled: bool  # the stored image's shorter side was below data.resolution (it was enlarged)
    time_ids: Tensor  # (6,) SDXL size/crop conditioning: original (h, w), crop (top, left), target (R, R)


class Batch(TypedDict):
    """One micro-batch, whatever the source. Pixel batches have latent_* = prompt_embeds = None; cache batches have
    pixel_values = None; pixel_values is also None when no sample of the batch was readable."""

    pixel_values: Tensor | None
    captions: list[str]
    latent_mean: Tensor | None
    latent_std: Tensor | None
    prompt_embeds: Tensor | None
    pooled_embeds: Tensor | None  # SDXL caches only
    skipped: int  # unreadable samples dropped from this batch
    missing_captions: int  # delivered samples whose caption was missing or empty (trained as "")
    upscaled: int  # delivered samples stored smaller than data.resolution (enlarged: blurrier than the recipe wants)
    time_ids: Tensor | None  # (B, 6) pixel batches: each sample's SDXL size/crop conditioning (used by SDXL runs)


class StreamBatch(Batch):
    """A batch of a sharded source (webdataset, hf_streaming) plus what the resumable position needs."""

    ids: list[tuple[int, int, int]]  # (epoch, virtual shard, ordinal) of each delivered sample
    keys: list[str]  # shard#key of each delivered sample (for logs and tests)
    dropped: list[tuple[int, int, int]]  # ids skipped or filtered since the previous batch
    finished: list[tuple[int, int, int]]  # (epoch, virtual shard, samples) read to the end
    filtered: int  # rejected by the metadata filters since the previous batch
    truncated: int  # shards that ended in a read error since the previous batch (their rest is lost)
    lost: list[str]  # those shards' names, with the error
    read: int  # samples taken from the shards since the previous batch (kept, filtered or unreadable)


def make_batch(samples: list[Sample | None], skipped: int = 0) -> Batch:
    """Stack the readable samples (None = unreadable, counted in ``skipped`` with the ``skipped`` given)."""
    import torch

    good = [s for s in samples if s is not None]
    captions = [s.get("caption", "") for s in good]

    def stack(key: str) -> Tensor | None:
        return torch.stack([s[key] for s in good]) if good and key in good[0] else None

    return Batch(
        pixel_values=stack("pixel_values"),
        captions=captions,
        latent_mean=stack("latent_mean"),
        latent_std=stack("latent_std"),
        prompt_embeds=stack("prompt_embeds"),
        pooled_embeds=stack("pooled_embeds"),
        skipped=skipped + len(samples) - len(good),
        missing_captions=sum(1 for c in captions if not c) if good and "pixel_values" in good[0] else 0,
        upscaled=sum(1 for s in good if s.get("upscaled")),
        time_ids=stack("time_ids"),
    )


def decode_sample(image: Any, caption: Any, cfg, rng: np.random.Generator, name: object = "",
                  meta: Mapping[str, Any] | None = None) -> Sample | None:  # fmt: skip
    """Decode + transform one raw sample (image bytes/path/PIL, caption string or list) with data config ``cfg``;
    None when the image cannot be decoded (the caller counts it). ``rng`` decides crop, flip and caption choice.
    ``meta`` (img2dataset's json, a parquet row) may give the source image's original size, which SDXL's time ids
    take when the stored image was resized (else the stored image's size)."""
    from ..conditioning import time_ids
    from .filters import original_size
    from .transforms import pick_caption, prepare_image

    try:
        img = open_image(image)
        pixels, (top, left) = prepare_image(img, cfg.resolution, rng, cfg.center_crop, cfg.random_flip,
                                            cfg.interpolation)  # fmt: skip
    except Exception as err:  # corrupt / unreadable sample: skipped and counted, never fatal
        logger.debug("skipping sample %s: %s", name, err)
        return None
    height, width = original_size(meta) or (img.height, img.width)
    sample = Sample(pixel_values=pixels, caption=pick_caption(caption, rng),
                    time_ids=time_ids(height, width, top, left, cfg.resolution))  # fmt: skip
    if min(img.size) < cfg.resolution:
        sample["upscaled"] = True  # counted (upscaled_samples); the training loop warns once per run
    return sample


def open_image(value: Any) -> Image.Image:
    """A PIL image from what a source holds (bytes, {"bytes"|"path"} dict, path, PIL), decoded now."""
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
