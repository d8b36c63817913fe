"""Fixtures for the pipeline tests: tiny LCM components (16x16 images) and an exported LCM folder."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny models run 5-20x faster on one thread when the 2 cores are shared (measured: 0.3 s vs 1.3-7 s per
    4-step batch); restored afterwards so other test folders keep the session setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def make_components(tmp_path_factory):
    """Factory: tiny SD components with an LCMScheduler; cached per (prediction_type, time_cond_proj_dim)."""
    from lcm_distill.testing import tiny_components

    cache: dict = {}
    root = tmp_path_factory.mktemp("lcm-components")

    def make(prediction_type: str = "epsilon", time_cond_proj_dim: int | None = 32) -> dict:
        key = (prediction_type, time_cond_proj_dim)
        if key not in cache:
            cache[key] = tiny_components(root, prediction_type, time_cond_proj_dim=time_cond_proj_dim, scheduler="lcm")
        return dict(cache[key])

    return make


@pytest.fixture
def lcm_pipe(make_components):
    """Our LCMPipeline on the eps, omega-conditioned tiny components."""
    from lcm_distill.pipelines import LCMPipeline

    pipe = LCMPipeline(**make_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def lcm_folder(make_components, tmp_path_factory):
    """A folder written by save_lcm_pipeline from the eps, omega-conditioned tiny components (N = 50)."""
    from lcm_distill.export import ModelCardInfo, save_lcm_pipeline
    from lcm_distill.testing import tiny_scheduler_config

    comps = make_components()
    return save_lcm_pipeline(
        tmp_path_factory.mktemp("export") / "tiny-lcm",
        unet=comps["unet"],
        vae=comps["vae"],
        text_encoder=comps["text_encoder"],
        tokenizer=comps["tokenizer"],
        teacher_scheduler_config=tiny_scheduler_config("epsilon"),
        num_points=50,
        card=ModelCardInfo(base_model="tiny/sd-teacher", method="LCD", datasets=["tiny/captions"], omega_range=(2, 14)),
    )


@pytest.fixture(scope="session")
def realign():
    """Copy every weight of a loaded pipeline into fresh (64-byte aligned) memory, in place.

    Weights loaded from safetensors are mmap views at arbitrary offsets; CPU kernels then take other SIMD paths and
    outputs differ by ~1e-6 although the weights are bit-identical. Re-allocating removes that, so loaded and
    in-memory pipelines can be compared exactly.
    """

    def apply(pipe):
        for name in ("unet", "vae", "text_encoder"):
            module = getattr(pipe, name)
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = tensor.data.clone()
        return pipe

    return apply
