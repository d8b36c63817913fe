"""Fixtures for data tests: LAION-style tar shards written here (good, corrupt and filtered-out samples), a tiny
teacher, a captioned imagefolder, a config factory, and accelerate's singleton reset for in-process train() calls."""

from __future__ import annotations

import pytest

from lcm_distill.config import load_config
from lcm_distill.testing import make_imagefolder, save_tiny_sd
from lcm_distill.testing.shards import write_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """3 shards x 9 samples: {"dir", "pattern", "kinds": {key: kind}}."""
    root = tmp_path_factory.mktemp("shards")
    kinds = write_shards(root, 3)
    return {"dir": root, "pattern": str(root / "shard-{000..002}.tar"), "kinds": kinds}


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    return save_tiny_sd(tmp_path_factory.mktemp("teacher") / "epsilon", "epsilon")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("images") / "shapes", n=8, size=16)


@pytest.fixture(scope="session")
def base_overrides(teacher_dir, image_dir):
    """A 1-step LCD run on the tiny kit, center crop and no flip (what a latent cache holds)."""
    return [
        f"model.teacher={teacher_dir}", "model.omega_embed_dim=32", f"data.dataset={image_dir}",
        "data.resolution=16", "data.center_crop=true", "data.random_flip=false",
        "train.per_device_batch_size=2", "train.max_train_steps=1", "train.report_to=none",
        "train.validation_prompts=[]", "train.export=false", "train.checkpoint_every=1000",
        "optim.learning_rate=1e-3", "train.ema_decay=0.9",
    ]  # fmt: skip


@pytest.fixture
def make_cfg(base_overrides, tmp_path):
    def make(*overrides: str, out: str = "run"):
        return load_config(None, [*base_overrides, f"train.output_dir={tmp_path / out}", *overrides])

    return make


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on shared cores: one torch thread made a 2-step train() 1.6 s instead of 24 s (measured here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
