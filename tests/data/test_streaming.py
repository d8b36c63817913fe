"""Hugging Face datasets as a streamed source (streaming=True) and the LAION filters on dataset columns."""

from __future__ import annotations

import json

import pytest

from lcm_distill.config import DataConfig
from lcm_distill.data import StreamingBatches, load_hf_dataset, shard_source
from lcm_distill.testing import make_imagefolder

FILTERS = {"min_width": 256, "min_height": 256, "max_pwatermark": 0.5, "min_aesthetic": 6.0}


@pytest.fixture(scope="module")
def laion_folder(tmp_path_factory):
    """8 images + 1 corrupt file with LAION parquet-style columns; rows i % 4 in (1, 2) fail a filter."""
    root = make_imagefolder(tmp_path_factory.mktemp("laion") / "folder", n=8, size=16, corrupt=1)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row.update(WIDTH=100 if i % 4 == 1 else 512, HEIGHT=512, AESTHETIC_SCORE=6.5,
                   pwatermark=0.9 if i % 4 == 2 else 0.1)  # fmt: skip
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    good = {r["text"] for i, r in enumerate(rows[:8]) if i % 4 in (0, 3)}
    return root, good


def _cfg(root, **kw) -> DataConfig:
    return DataConfig(**{"source": "hf_streaming", "dataset": str(root), "resolution": 16, "shuffle_buffer": 2, **kw})


def _epoch0_captions(batches: StreamingBatches) -> list[str]:
    captions = []
    for n, batch in enumerate(batches):
        captions += [c for (e, _, _), c in zip(batch["ids"], batch["captions"], strict=True) if e == 0]
        if batches.position.epoch >= 1:
            return captions
        assert n < 200
    raise AssertionError("stream ended")


def test_two_ranks_stream_one_file_without_overlap_and_filter_it(laion_folder):
    root, good = laion_folder
    cfg = _cfg(root, **FILTERS)
    per_rank, skipped, filtered = [], 0, 0
    for rank in range(2):
        batches = StreamingBatches(shard_source(cfg), cfg, 1, rank, 2, seed=1)
        assert batches.position.plan.num_shards == 1 and batches.position.plan.parts == 2  # one file, cut in two
        per_rank.append(_epoch0_captions(batches))
        skipped += batches.position.skipped_samples
        filtered += batches.position.filtered_samples
    assert all(per_rank) and not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(good)
    assert skipped >= 1 and filtered >= 4


def test_streaming_position_resumes_inside_the_file(laion_folder):
    root, _ = laion_folder
    cfg = _cfg(root)
    first = StreamingBatches(shard_source(cfg), cfg, 2, 0, 1, seed=2)
    before = next(iter(first))["captions"]
    second = StreamingBatches(shard_source(cfg), cfg, 2, 0, 1, seed=2)
    second.position.load_state_dict(first.position.state_dict())
    after = _epoch0_captions(second)
    assert not set(before) & set(after) and len(before) + len(after) == 8


def test_map_style_source_applies_the_same_filters(laion_folder):
    root, good = laion_folder
    rows = load_hf_dataset(DataConfig(dataset=str(root), resolution=16, **FILTERS))
    assert sorted(rows["text"]) == sorted(good | {"a broken file"})  # the corrupt file passes the metadata filters
    assert len(load_hf_dataset(DataConfig(dataset=str(root), resolution=16))) == 9


def test_missing_column_is_named(laion_folder):
    root, _ = laion_folder
    with pytest.raises(ValueError, match=r"data\.caption_column='caption'"):
        shard_source(_cfg(root, caption_column="caption"))
