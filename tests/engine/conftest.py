"""Fixtures for engine tests: tiny teachers on disk, a tiny captioned imagefolder, and a config factory."""

from __future__ import annotations

import pytest

from lcm_distill.config import load_config
from lcm_distill.testing import make_imagefolder, save_tiny_sd


@pytest.fixture(scope="session")
def teacher_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    return {p: save_tiny_sd(root / p, p) for p in ("epsilon", "v_prediction")}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("data") / "shapes", n=16, size=16)


@pytest.fixture(scope="session")
def corrupt_data_dir(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("data") / "shapes-corrupt", n=7, size=16, corrupt=1)


@pytest.fixture
def make_cfg(teacher_dirs, data_dir, tmp_path):
    def make(*overrides: str, prediction_type: str = "epsilon", out: str = "run"):
        base = [
            f"model.teacher={teacher_dirs[prediction_type]}",
            "model.omega_embed_dim=32",
            f"data.dataset={data_dir}",
            "data.resolution=16",
            f"train.output_dir={tmp_path / out}",
            "train.per_device_batch_size=2",
            "train.max_train_steps=2",
            "train.report_to=none",
            "train.validation_prompts=[]",
            "train.export=false",
            "train.checkpoint_every=1000",
            "optim.learning_rate=1e-3",
        ]
        return load_config(None, [*base, *overrides])

    return make


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory):
    """A tiny SDXL folder (lcm_distill.testing.save_tiny_sdxl): two text encoders, a "text_time" UNet."""
    from lcm_distill.testing import save_tiny_sdxl

    return save_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")
