"""Fixtures for the evaluation harness: a tiny in-process SD pipeline and a tiny deterministic feature network."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session")
def tiny_pipe(tmp_path_factory):
    """StableDiffusionPipeline on the offline tiny components (16x16 images, eps teacher)."""
    from diffusers import StableDiffusionPipeline

    from lcm_distill.testing import tiny_components

    comps = tiny_components(tmp_path_factory.mktemp("tiny-pipe"), "epsilon")
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def lcm_dir(tmp_path_factory):
    """A tiny w-conditioned student saved as a LatentConsistencyModelPipeline folder."""
    from diffusers import LatentConsistencyModelPipeline

    from lcm_distill.testing import tiny_components

    out = tmp_path_factory.mktemp("tiny-lcm")
    comps = tiny_components(out / "build", "epsilon", time_cond_proj_dim=32, scheduler="lcm")
    pipe = LatentConsistencyModelPipeline(**comps, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(out / "lcm", safe_serialization=True)
    return out / "lcm"


@pytest.fixture(scope="session")
def tiny_extractor():
    """8-d features from a fixed random conv net: cheap, deterministic, sensitive to colour and layout."""
    from lcm_distill.evaluation import ModuleFeatures

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ModuleFeatures(net.eval(), 8, name="tiny-random-conv")


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory):
    """Register a very small open_clip architecture (random weights) and return its name."""
    import json

    import open_clip

    d = tmp_path_factory.mktemp("openclip-cfg")
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (d / "lcm-test-tiny-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d)
    return "lcm-test-tiny-clip"


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory):
    """One tiny eps teacher folder on disk (the CLI tests need no v-prediction twin)."""
    from lcm_distill.testing import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("sd-cli") / "tiny-sd", "epsilon")
