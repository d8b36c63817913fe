"""The training loop on streamed sources: batches from build_batches, the per-rank position in checkpoints, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lcm_distill.config import load_config
from lcm_distill.engine import list_checkpoints, train
from lcm_distill.testing.shards import FILTERS

ROOT = Path(__file__).parents[2]


def _data_state(checkpoint) -> dict:
    """The engine state's data position among accelerate's pickled custom objects."""
    for pkl in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
        state = torch.load(pkl, weights_only=False)
        if isinstance(state, dict) and "data" in state:
            return state["data"]
    raise AssertionError(f"no engine state in {checkpoint}")


@pytest.mark.parametrize("source", ["webdataset", "hf_streaming"])
def test_training_streams_checkpoints_its_position_and_resumes(make_cfg, shards, source):
    over = {
        "webdataset": ["data.source=webdataset", f"data.shards={shards['pattern']}",
                       *(f"data.{k}={v}" for k, v in FILTERS.items())],
        "hf_streaming": ["data.source=hf_streaming"],
    }[source]  # fmt: skip
    cfg = make_cfg(*over, "train.max_train_steps=3", "data.shuffle_buffer=4")
    first = train(cfg, stop_after=2)
    assert first.status == "interrupted" and first.step == 2
    data = _data_state(first.last_checkpoint)
    assert data["kind"] == "shards" and data["samples"] == 2 * 2 and data["world"] == 1
    if source == "webdataset":  # 4 good samples need 2 shards, whose first bad/filtered samples were reported
        assert data["skipped_samples"] + data["filtered_samples"] >= 1
    second = train(cfg, resume="latest")
    assert second.status == "finished" and second.step == 3 and len(second.losses) == 1
    assert _data_state(second.last_checkpoint)["samples"] == 3 * 2


@pytest.mark.slow
def test_two_processes_stream_their_own_shards_and_resume(base_overrides, shards, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(
        None,
        [
            *base_overrides,
            "data.source=webdataset",
            f"data.shards={shards['pattern']}",
            "train.max_train_steps=2",
            "train.checkpoint_every=1",
            f"train.output_dir={out}",
        ],
    )
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
        str(ROOT / "train_lcd.py"),
        "--config",
        str(tmp_path / "c.yaml"),
    ]
    for extra in ([], ["--set", "train.max_train_steps=3", "--resume", "latest"]):
        proc = subprocess.run([*launch, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = _data_state(list_checkpoints(out)[-1])["per_rank"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["samples"] == 3 * 2 for r in ranks)
    assert "finished at step 3" in proc.stdout
