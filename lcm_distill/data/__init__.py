"""Data sources -> one sample schema {"pixel_values": (3, R, R) in [-1, 1], "caption": str}.

The training loop gets its batches from :func:`build_batches` whatever the source: map-style (hf, the latent cache)
through :class:`ResumableBatches`, sharded iterables (webdataset, hf_streaming) through :class:`StreamingBatches`.
Both iterate endlessly and expose ``position`` (state_dict / load_state_dict, skipped_samples) for checkpoints.
"""

from collections.abc import Callable

from ..source_kinds import SOURCE_KINDS
from .batch import DataError
from .hf import CaptionedImages, filtered_hf_dataset, load_hf_dataset
from .iterable import ShardPosition, StreamingBatches
from .latent_cache import CachedLatents, cache_key, encoder_dtypes
from .loader import DataPosition, ResumableBatches, collate_skipping


def _hf(cfg, seed: int):
    rows, filtered = filtered_hf_dataset(cfg)
    return CaptionedImages(rows, cfg, seed, filtered)


def _hf_streaming(cfg, seed: int):
    from .streaming import HFStreamingShards

    return HFStreamingShards(cfg)


def _webdataset(cfg, seed: int):
    from .webdataset import TarShards

    return TarShards(cfg.shards)


# data.source -> its opener (DataConfig, seed) -> a map-style Dataset (random access: __getitem__((epoch, index))) or,
# for a streamed kind, a ShardSource (urls, open(shard)). Its facts (streamed, where its location is) are
# source_kinds.SOURCE_KINDS; a new source is a line in each and its module (docs/extending.md).
SOURCES: dict[str, Callable] = {"hf": _hf, "hf_streaming": _hf_streaming, "webdataset": _webdataset}


def build_dataset(cfg, seed: int = 0):
    """The map-style dataset of a random-access data.source."""
    if SOURCE_KINDS[cfg.source].streamed:
        raise ValueError(f"data.source={cfg.source!r} is a streamed source; a map-style dataset needs one of "
                         f"{[k for k, v in SOURCE_KINDS.items() if not v.streamed]}.")  # fmt: skip
    return SOURCES[cfg.source](cfg, seed)


def shard_source(cfg, seed: int = 0):
    """The ShardSource of a streamed data.source."""
    if not SOURCE_KINDS[cfg.source].streamed:
        raise ValueError(f"data.source={cfg.source!r} is not a streamed source "
                         f"({[k for k, v in SOURCE_KINDS.items() if v.streamed]}).")  # fmt: skip
    return SOURCES[cfg.source](cfg, seed)


def build_batches(cfg, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, models=None):
    """This rank's endless, resumable batches for data config ``cfg``.

    With data.cache_dir the batches hold cached latents/embeddings instead of pixels; ``models`` (the run's
    VAE, text encoder, tokenizer) are then required, to refuse a cache that other models or transforms produced.
    """
    if cfg.cache_dir:
        if models is None:
            raise ValueError("data.cache_dir: pass the run's models so the cache key can be checked.")
        second = (getattr(models, "text_encoder_2", None), getattr(models, "tokenizer_2", None))  # SDXL's
        key = cache_key(models.vae, models.text_encoder, models.tokenizer, cfg, *second)
        dataset = CachedLatents(cfg.cache_dir, key, encoder_dtypes(models.vae, models.text_encoder))
    elif not SOURCE_KINDS[cfg.source].streamed:
        dataset = build_dataset(cfg, seed)
    else:
        return StreamingBatches(shard_source(cfg, seed), cfg, batch_size, rank, world_size, seed, cfg.num_workers)
    return ResumableBatches(dataset, batch_size, rank, world_size, seed, cfg.num_workers)


__all__ = [
    "SOURCES",
    "CachedLatents",
    "CaptionedImages",
    "DataError",
    "DataPosition",
    "ResumableBatches",
    "ShardPosition",
    "StreamingBatches",
    "build_batches",
    "build_dataset",
    "collate_skipping",
    "load_hf_dataset",
    "shard_source",
]
