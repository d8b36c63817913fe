"""Hub ids offline: read from the caches as huggingface_hub and datasets lay them out (lcm_distill.testing.hub_cache),
everywhere a path works - teacher, dataset, evaluate, split, training end to end - and refused with the download
command only when no cache holds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lcm_distill.config import ConfigError, load_config
from lcm_distill.hub import HubUnavailable, dataset_location, model_location, offline
from lcm_distill.testing import save_tiny_sd
from lcm_distill.testing.hub_cache import add_prepared_dataset, add_to_hub_cache, captioned_parquet

ROOT = Path(__file__).resolve().parents[1]


def _parquet(folder: Path, rows: int, seed: int) -> Path:
    return captioned_parquet(folder, rows, seed)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """A hub cache holding the model org/tiny-sd and the dataset org/captions; a datasets cache holding the prepared
    dataset org/prepared. Returns their paths and the environment that points the libraries at them."""
    root = tmp_path_factory.mktemp("hf")
    hub, prepared = root / "hub", root / "datasets"
    add_to_hub_cache(hub, "org/tiny-sd", save_tiny_sd(root / "src" / "tiny-sd"))
    repo = root / "src" / "captions"
    _parquet(repo, 6, seed=1)
    (repo / "README.md").write_text("---\nlicense: mit\n---\n")
    add_to_hub_cache(hub, "org/captions", repo, repo_type="dataset")
    add_prepared_dataset(prepared, "org/prepared", {"train": _parquet(root / "src" / "prepared", 5, seed=2)})
    env = {"HF_HUB_CACHE": str(hub), "HF_DATASETS_CACHE": str(prepared)}
    return {"hub": hub, "datasets": prepared, "env": env}


@pytest.fixture
def use_caches(caches, monkeypatch):
    """Point huggingface_hub and datasets (which read their cache folders at import) at the test caches."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(caches["hub"]))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(caches["datasets"]))
    return caches


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_each_offline_variable_alone_means_offline(monkeypatch, variable):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    assert not offline()
    monkeypatch.setenv(variable, "1")
    assert offline()


def test_hub_ids_resolve_to_their_cached_copies(use_caches):
    snapshot = Path(model_location("org/tiny-sd"))
    assert snapshot.parent.parent.name == "models--org--tiny-sd" and (snapshot / "model_index.json").is_file()
    assert (Path(dataset_location("org/captions")) / "README.md").is_file()
    assert dataset_location("org/prepared") == "org/prepared"  # datasets reads its prepared cache itself
    with pytest.raises(HubUnavailable, match="hf download org/missing"):
        model_location("org/missing")
    with pytest.raises(HubUnavailable, match="hf download org/missing --repo-type dataset"):
        dataset_location("org/missing")


@pytest.mark.parametrize("dataset", ["org/captions", "org/prepared"])
def test_preflight_and_the_loader_take_cached_hub_ids(use_caches, tmp_path, dataset):
    from lcm_distill.data import build_dataset
    from lcm_distill.engine.preflight import preflight

    cfg = load_config(None, ["model.teacher=org/tiny-sd", f"data.dataset={dataset}", "data.resolution=16",
                             f"train.output_dir={tmp_path / 'run'}", "model.omega_embed_dim=32"])  # fmt: skip
    assert preflight(cfg, dry_run=True).scheduler_config["num_train_timesteps"] == 1000
    assert len(build_dataset(cfg.data)) == {"org/captions": 6, "org/prepared": 5}[dataset]
    for key, value in (("model.teacher", "org/missing"), ("data.dataset", "org/missing")):
        bad = load_config(None, ["model.teacher=org/tiny-sd", f"data.dataset={dataset}", "data.resolution=16",
                                 f"{key}={value}", f"train.output_dir={tmp_path}/r2"])  # fmt: skip
        with pytest.raises(ConfigError, match=rf"{key}=org/missing: .*hf download org/missing"):
            preflight(bad, dry_run=True)


def test_split_and_evaluate_take_cached_hub_ids(use_caches, tmp_path):
    from lcm_distill.cli.evaluate import FlagError, build_parser, check_args
    from lcm_distill.cli.split import main as split_main

    assert split_main(["--dataset", "org/captions", "--out", str(tmp_path / "split"), "--test-fraction", "0.34"]) == 0
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) >= ["test", "train"]
    assert split_main(["--dataset", "org/missing", "--out", str(tmp_path / "s2")]) == 2
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n")
    flags = ["--kind", "lcm", "--prompts", str(prompts), "--out", str(tmp_path / "e")]
    check_args(build_parser().parse_args(["--model", "org/tiny-sd", *flags]))
    with pytest.raises(FlagError, match=r"--model org/missing: .*hf download org/missing"):
        check_args(build_parser().parse_args(["--model", "org/missing", *flags]))


def test_training_end_to_end_from_hub_ids_offline(caches, tmp_path):
    """A real process with only the cache variables set: teacher and dataset by hub id, one step, exported."""
    env = {**os.environ, **caches["env"], "OMP_NUM_THREADS": "1"}
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
        env.pop(v, None)
    env["TRANSFORMERS_OFFLINE"] = "1"  # the one variable huggingface_hub also reads
    cfg = load_config(None, ["model.teacher=org/tiny-sd", "data.dataset=org/captions", "data.resolution=16",
                             "model.omega_embed_dim=32", "train.max_train_steps=1", "train.per_device_batch_size=2",
                             "train.report_to=none", "train.validation_prompts=[]",
                             f"train.output_dir={tmp_path / 'run'}"])  # fmt: skip
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    cmd = [sys.executable, str(ROOT / "train_lcd.py"), "--config", str(tmp_path / "c.yaml")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished at step 1" in proc.stdout
    card = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert card["status"] == "finished"
