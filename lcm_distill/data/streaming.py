"""Hugging Face datasets with ``streaming=True`` (data.source=hf_streaming): hub ids or local parquet/imagefolder.

Nothing is downloaded up front. The dataset's own shards (``IterableDataset.n_shards``: usually its data files) are
the shards of :mod:`lcm_distill.data.iterable`, which splits them over ranks and workers, shuffles, filters on the
row's metadata columns (e.g. LAION parquet's WIDTH, pwatermark, AESTHETIC_SCORE) and keeps the resumable position.
A single-file dataset is cut into virtual parts there, so 8 ranks can stream one parquet file without overlap
(each reads the whole file and keeps every 8th row).
"""

from __future__ import annotations

from collections.abc import Iterator

from .hf import open_hf_dataset


class HFStreamingShards:
    """A :class:`~lcm_distill.data.iterable.ShardSource` over a streamed Hugging Face dataset."""

    def __init__(self, cfg) -> None:
        self.image_column, self.caption_column = cfg.image_column, cfg.caption_column
        self.dataset = open_hf_dataset(cfg, streaming=True)
        name = f"{cfg.dataset}[{cfg.config_name or 'default'}/{cfg.split}]"
        self.urls = [f"{name}#{i}" for i in range(self.dataset.n_shards)]

    def open(self, shard: int) -> Iterator[dict]:
        rows = self.dataset.shard(num_shards=self.dataset.n_shards, index=shard, contiguous=True)
        for i, row in enumerate(rows):
            yield {"key": str(i), "image": row[self.image_column], "caption": row[self.caption_column], "meta": row,
                   "error": None if row[self.image_column] is not None else "no image"}  # fmt: skip
