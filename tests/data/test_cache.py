"""The latent/text cache: round trip, key checks, multi-rank parts, and training from it == training from images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lcm_distill.cli.cache import main as cache_main
from lcm_distill.cli.cache import write_part
from lcm_distill.conditioning import encode_prompts
from lcm_distill.config import load_config
from lcm_distill.data import build_batches, build_dataset
from lcm_distill.data.latent_cache import CachedLatents, CacheKeyError, cache_data_config, cache_key, finalize_cache
from lcm_distill.engine import train
from lcm_distill.models import Models, encode_images, load_frozen_encoders
from lcm_distill.testing import tiny_text_encoder, tiny_vae
from lcm_distill.testing.shards import CORRUPT, FILTERED, FILTERS, GOOD, keys_of

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def built_cache(base_overrides, tmp_path_factory):
    """An fp32 cache of the 8-image folder, written by the command in files of 5 + 3 samples."""
    root = tmp_path_factory.mktemp("cache")
    config = root / "run.yaml"
    config.write_text(load_config(None, base_overrides).to_yaml())
    out = root / "latents"
    argv = ["--config", str(config), "--out", str(out), "--dtype", "fp32", "--batch-size", "3", "--shard-size", "5"]
    assert cache_main(argv) == 0
    return {"config": config, "out": out, "argv": argv}


def _encoders(cfg):
    vae, text_encoder, tokenizer = load_frozen_encoders(cfg.model, cfg.objective.kind == "lcd")
    return SimpleNamespace(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def test_cache_round_trips_the_posterior_and_embeddings(built_cache, base_overrides):
    cfg = load_config(None, base_overrides)
    manifest = json.loads((built_cache["out"] / "manifest.json").read_text())
    assert manifest["samples"] == 8 and [f["count"] for f in manifest["files"]] == [5, 3]
    assert "center crop, no flip" in manifest["transforms"] and manifest["dtype"] == "fp32"
    enc = _encoders(cfg)
    cached = CachedLatents(built_cache["out"], cache_key(enc.vae, enc.text_encoder, enc.tokenizer, cfg.data))
    images = build_dataset(cache_data_config(cfg.data))
    for i in range(len(images)):  # world 1: cache index == row index
        sample, row = images[(0, i)], cached[(3, i)]
        mean, std = encode_images(enc.vae, sample["pixel_values"][None])
        embeds = encode_prompts(enc.tokenizer, enc.text_encoder, [sample["caption"]])
        assert row["caption"] == sample["caption"]
        torch.testing.assert_close(row["latent_mean"], mean[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(row["latent_std"], std[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(row["prompt_embeds"], embeds[0], atol=1e-5, rtol=1e-5)
    assert cache_main(built_cache["argv"]) == 2  # an existing cache is not overwritten silently


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [(("data.resolution=32",), ["resolution"]), (("data.interpolation=bicubic",), ["interpolation"])],
    ids=["resolution", "interpolation"],
)
def test_a_cache_from_other_transforms_is_refused(built_cache, make_cfg, overrides, fields):
    cfg = make_cfg(*overrides, f"data.cache_dir={built_cache['out']}")
    with pytest.raises(CacheKeyError, match=r"data\.cache_dir") as err:
        build_batches(cfg.data, 2, models=_encoders(cfg))
    differing = str(err.value).split("differing fields: ")[1]
    assert sorted(part.split(" (")[0] for part in differing.split("; ")) == sorted(fields)


@pytest.mark.parametrize("net", ["vae", "text_encoder"])
def test_other_encoder_weights_with_the_same_config_are_refused(built_cache, make_cfg, net):
    cfg = make_cfg(f"data.cache_dir={built_cache['out']}")
    enc = _encoders(cfg)
    other = {"vae": tiny_vae, "text_encoder": tiny_text_encoder}[net](seed=1)  # same architecture, other weights
    setattr(enc, net, other.to(getattr(enc, net).dtype))
    with pytest.raises(CacheKeyError, match=rf"differing fields: {net}\.weights \(other weights") as err:
        build_batches(cfg.data, 2, models=enc)
    assert ";" not in str(err.value).split("differing fields: ")[1]  # nothing else differs


def test_the_same_checkpoint_in_another_frozen_dtype_is_accepted_with_a_warning(built_cache, make_cfg, caplog):
    cfg = make_cfg(f"data.cache_dir={built_cache['out']}", "model.frozen_dtype=bf16")
    batches = build_batches(cfg.data, 2, models=_encoders(cfg))
    assert len(batches.dataset) == 8 and "torch.float32" in caplog.text and "torch.bfloat16" in caplog.text


def test_training_from_the_cache_gives_the_loss_of_training_from_images(built_cache, make_cfg, monkeypatch):
    """Same rows, same step noise (latent = mean + std * eps with the same eps): equal losses over 2 steps.

    Adam's first steps are sign-like (g / (|g| + eps)): a 1e-7 difference in a near-zero gradient would flip an update
    by 2 lr. A large eps makes the update proportional to g, so step 2 compares the gradients themselves.
    """
    over = ("train.max_train_steps=2", "optim.adam_epsilon=1.0", "optim.learning_rate=0.05")
    from_images = train(make_cfg(*over, out="images")).losses

    def no_vae(*args, **kwargs):
        raise AssertionError("a run reading the cache must not encode images")

    monkeypatch.setattr(Models, "encode_images", no_vae)
    from_cache = train(make_cfg(*over, f"data.cache_dir={built_cache['out']}", out="cached")).losses
    assert len(from_images) == len(from_cache) == 2
    for a, b in zip(from_images, from_cache, strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (from_images, from_cache)  # only VAE batch-size rounding differs


def test_two_ranks_write_disjoint_parts_of_a_webdataset_cache(base_overrides, shards, tmp_path):
    over = [f"{k}={v}" for k, v in {"data.source": "webdataset", "data.shards": shards["pattern"],
                                     **{f"data.{k}": v for k, v in FILTERS.items()}}.items()]  # fmt: skip
    cfg = load_config(None, [*base_overrides, *over])
    out = tmp_path / "wds-cache"
    parts = [write_part(cfg, out, r, 2, torch.device("cpu"), "fp16", batch_size=4, shard_size=3) for r in range(2)]
    manifest = finalize_cache(out, 2)
    cached = CachedLatents(out)
    from safetensors import safe_open

    keys = [k.rsplit("#", 1)[1] for f in manifest["files"]
            for k in json.loads(safe_open(str(out / f["name"]), "pt").metadata()["keys"])]  # fmt: skip
    assert all(p["files"] for p in parts) and len(keys) == len(set(keys)) == len(cached)
    assert set(keys) == keys_of(shards["kinds"], GOOD)
    assert manifest["skipped_samples"] == len(keys_of(shards["kinds"], CORRUPT))
    assert manifest["filtered_samples"] == len(keys_of(shards["kinds"], FILTERED))
    assert cached[0]["latent_mean"].dtype == torch.float16 and cached[0]["prompt_embeds"].shape == (77, 32)


@pytest.mark.slow
def test_cache_command_under_two_processes(built_cache, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29531", "-m", "lcm_distill.cli.cache"]  # fmt: skip
    proc = subprocess.run([*launch, "--config", str(built_cache["config"]), "--out", str(out), "--batch-size", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world"] == 2 and manifest["samples"] == 8
    assert {f["name"].split("-")[1] for f in manifest["files"]} == {"r0000", "r0001"}


def test_an_sdxl_cache_holds_both_encoders_pooled_embeddings_and_time_ids_and_trains_like_images(
        base_overrides, tmp_path, monkeypatch):  # fmt: skip
    """SDXL's conditioning in the cache: hidden states of both encoders side by side, the pooled embedding, each
    sample's time ids (non-square images: original size and the centre crop's corner), kept in fp32; a run from the
    cache gives the loss of the run from the images (encoding skipped), and the key names the second encoder."""
    import numpy as np
    from PIL import Image

    from lcm_distill.testing import save_tiny_sdxl

    sdxl = save_tiny_sdxl(tmp_path / "sdxl")
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = [(32, 16), (16, 24), (40, 20), (16, 16)]  # (w, h): resized so the shorter side is 16, centre-cropped
    with open(folder / "metadata.jsonl", "w") as fh:
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(np.full((h, w, 3), 40 * i + 30, dtype=np.uint8)).save(folder / f"{i}.png")
            fh.write(json.dumps({"file_name": f"{i}.png", "text": f"shade {i}"}) + "\n")
    over = [*base_overrides, f"model.teacher={sdxl}", f"data.dataset={folder}", "train.max_train_steps=2",
            "optim.adam_epsilon=1.0", "optim.learning_rate=0.05"]  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(load_config(None, over).to_yaml())
    out = tmp_path / "latents"
    assert cache_main(["--config", str(config), "--out", str(out), "--dtype", "fp32", "--batch-size", "2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"text_encoder_2.weights", "tokenizer_2"} <= set(manifest["key"])
    cached = CachedLatents(out)
    rows = {cached[i]["caption"]: cached[i] for i in range(len(cached))}
    assert rows["shade 0"]["prompt_embeds"].shape == (77, 64) and rows["shade 0"]["pooled_embeds"].shape == (32,)
    # (h, w, top, left, 16, 16): 32x16 -> left (32 - 16) // 2 = 8; 16x24 -> top 4; 40x20 -> 32x16, left 8
    assert rows["shade 0"]["time_ids"].tolist() == [16, 32, 0, 8, 16, 16]
    assert rows["shade 1"]["time_ids"].tolist() == [24, 16, 4, 0, 16, 16]
    assert rows["shade 2"]["time_ids"].tolist() == [20, 40, 0, 8, 16, 16] and rows["shade 2"]["time_ids"].dtype == (
        torch.float32)  # fmt: skip
    from_images = train(load_config(None, [*over, f"train.output_dir={tmp_path / 'a'}"])).losses

    def no_vae(*args, **kwargs):
        raise AssertionError("a run reading the cache must not encode images")

    monkeypatch.setattr(Models, "encode_images", no_vae)
    from_cache = train(load_config(None, [*over, f"data.cache_dir={out}", f"train.output_dir={tmp_path / 'b'}"]))
    assert len(from_images) == len(from_cache.losses) == 2
    for a, b in zip(from_images, from_cache.losses, strict=True):
        assert abs(a - b) <= 1e-5 * abs(a), (from_images, from_cache.losses)
