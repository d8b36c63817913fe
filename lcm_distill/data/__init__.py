"""Data sources -> one sample schema {"pixel_values": (3, R, R) in [-1, 1], "caption": str}.

The training loop gets its batches from :func:`build_batches` whatever the source: map-style (hf, the latent cache)
through :class:`ResumableBatches`, sharded iterables (webdataset, hf_streaming) through :class:`StreamingBatches`.
Both iterate endlessly and expose ``position`` (state_dict / load_state_dict, skipped_samples) for checkpoints.
"""

from .batch import DataError
from .hf import CaptionedImages, load_hf_dataset
from .iterable import ShardPosition, StreamingBatches
from .latent_cache import CachedLatents, cache_key, encoder_dtypes
from .loader import DataPosition, ResumableBatches, collate_skipping

SOURCES = ("hf", "hf_streaming", "webdataset")  # data.source: map-style hf; the other two are streamed (shard_source)


def build_dataset(cfg, seed: int = 0):
    """The map-style dataset for ``cfg`` (a DataConfig with data.source=hf)."""
    if cfg.source == "hf":
        return CaptionedImages(load_hf_dataset(cfg), cfg, seed)
    raise ValueError(f"data.source={cfg.source!r} is a streamed source; a map-style dataset needs data.source=hf.")


def shard_source(cfg):
    """The ShardSource of a streamed data.source (webdataset | hf_streaming)."""
    if cfg.source == "webdataset":
        from .webdataset import TarShards

        return TarShards(cfg.shards)
    if cfg.source == "hf_streaming":
        from .streaming import HFStreamingShards

        return HFStreamingShards(cfg)
    raise ValueError(f"data.source={cfg.source!r} is not a streamed source (webdataset | hf_streaming).")


def build_batches(cfg, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, models=None):
    """This rank's endless, resumable batches for data config ``cfg``.

    With data.cache_dir the batches hold cached latents/embeddings instead of pixels; ``models`` (the run's
    VAE, text encoder, tokenizer) are then required, to refuse a cache that other models or transforms produced.
    """
    if cfg.cache_dir:
        if models is None:
            raise ValueError("data.cache_dir: pass the run's models so the cache key can be checked.")
        key = cache_key(models.vae, models.text_encoder, models.tokenizer, cfg)
        dataset = CachedLatents(cfg.cache_dir, key, encoder_dtypes(models.vae, models.text_encoder))
    elif cfg.source == "hf":
        dataset = build_dataset(cfg, seed)
    else:
        return StreamingBatches(shard_source(cfg), cfg, batch_size, rank, world_size, seed, cfg.num_workers)
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
