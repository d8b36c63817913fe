"""The training loop on streamed sources: batches from build_batches, the per-rank position in checkpoints, resume."""

from __future__ import annotations

import pytest
import torch

from lcm_distill.engine import train
from lcm_distill.testing.shards import FILTERS


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
