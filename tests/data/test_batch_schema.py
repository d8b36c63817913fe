"""One batch schema: every source yields the keys of lcm_distill.data.batch.Batch (streamed ones the accounting of
StreamBatch too), with the same types, and the map-style and streamed sources decode through the same helper."""

from __future__ import annotations

import typing

import torch

from lcm_distill.config import DataConfig
from lcm_distill.data import build_batches, collate_skipping
from lcm_distill.data.batch import Batch, StreamBatch, decode_sample
from lcm_distill.data.transforms import sample_rng

BATCH_KEYS = set(typing.get_type_hints(Batch))
STREAM_KEYS = set(typing.get_type_hints(StreamBatch))


def _check_pixels(batch, n):
    assert batch["pixel_values"].shape == (n, 3, 16, 16) and len(batch["captions"]) == n
    assert batch["latent_mean"] is None and batch["latent_std"] is None and batch["prompt_embeds"] is None
    assert isinstance(batch["skipped"], int)


def test_hf_and_webdataset_batches_have_the_one_schema(image_dir, shards):
    hf = next(iter(build_batches(DataConfig(dataset=str(image_dir), resolution=16), 2)))
    assert set(hf) == BATCH_KEYS
    _check_pixels(hf, 2)
    wds_cfg = DataConfig(source="webdataset", shards=shards["pattern"], resolution=16, shuffle_buffer=0)
    wds = next(iter(build_batches(wds_cfg, 2)))
    assert set(wds) == STREAM_KEYS and BATCH_KEYS < STREAM_KEYS
    _check_pixels(wds, 2)


def test_cache_samples_and_unreadable_samples_collate_to_the_schema():
    cached = {"latent_mean": torch.zeros(4, 2, 2), "latent_std": torch.ones(4, 2, 2),
              "prompt_embeds": torch.zeros(77, 32), "caption": "a"}  # fmt: skip
    batch = collate_skipping([cached, None, cached])
    assert set(batch) == BATCH_KEYS and batch["pixel_values"] is None and batch["skipped"] == 1
    assert batch["latent_mean"].shape == (2, 4, 2, 2) and batch["prompt_embeds"].shape == (2, 77, 32)
    empty = collate_skipping([None, None])
    assert set(empty) == BATCH_KEYS and empty["pixel_values"] is None and empty["skipped"] == 2


def test_both_sources_decode_through_one_helper(image_dir):
    from lcm_distill.data import build_dataset

    cfg = DataConfig(dataset=str(image_dir), resolution=16)
    ds = build_dataset(cfg, seed=5)
    row = ds.rows[3]
    direct = decode_sample(row[cfg.image_column], row[cfg.caption_column], cfg, sample_rng(5, 1, 3))
    via_dataset = ds[(1, 3)]
    assert torch.equal(direct["pixel_values"], via_dataset["pixel_values"])
    assert direct["caption"] == via_dataset["caption"]
    assert decode_sample(b"not an image", "x", cfg, sample_rng(0, 0, 0)) is None


def test_a_new_source_is_its_two_registry_lines(monkeypatch, tmp_path, image_dir):
    """docs/extending.md's walk-through: a toy streamed source registered in source_kinds.SOURCE_KINDS and
    data.SOURCES alone passes the config checks and the preflight's data check, and trains through build_batches
    with the one schema and a resumable position."""
    import io

    import yaml
    from PIL import Image

    from lcm_distill import data
    from lcm_distill.config import load_config
    from lcm_distill.engine.preflight import check_data
    from lcm_distill.source_kinds import SOURCE_KINDS, SourceKind

    class ToyShards:  # two shards of three generated images each
        def __init__(self) -> None:
            self.urls = ["toy://0", "toy://1"]

        def open(self, shard: int):
            for i in range(3):
                buf = io.BytesIO()
                Image.new("RGB", (20, 20), (40 * i, 80 * shard, 200)).save(buf, format="PNG")
                yield {"key": f"{shard}-{i}", "image": buf.getvalue(), "caption": f"toy {shard} {i}", "meta": {},
                       "error": None}  # fmt: skip

    monkeypatch.setitem(SOURCE_KINDS, "toy", SourceKind(streamed=True, location_key="dataset", location_hint="toy"))
    monkeypatch.setitem(data.SOURCES, "toy", lambda cfg, seed: ToyShards())
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"teacher": "stabilityai/stable-diffusion-2-1-base"},
                                    "data": {"source": "toy", "dataset": str(image_dir), "resolution": 16,
                                             "shuffle_buffer": 0}}))  # fmt: skip
    cfg = load_config(str(path))  # data.source=toy is a valid choice: CHOICES reads the registry
    check_data(cfg)  # its location key (data.dataset) is checked like every source's before models load
    batches = data.build_batches(cfg.data, 2)
    batch = next(iter(batches))
    assert set(batch) == STREAM_KEYS
    _check_pixels(batch, 2)
    assert batches.position.state_dict()  # resumable like every streamed source
