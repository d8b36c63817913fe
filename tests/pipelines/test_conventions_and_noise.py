"""The pipeline file's private copies of our conventions equal the canonical lcm_distill.functional ones exactly,
and the stochastic sampling option (noise_fraction) does what its docstring says."""

from __future__ import annotations

import ast
import inspect
import sys

import pytest
import torch
from lcm_distill.pipelines import pipeline_lcm

from lcm_distill.functional import SkippingGrid, omega_embedding, omega_from_guidance_scale

PROMPT = "a photo of a cat"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- convention copies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "N"), [(1000, 50), (1000, 100), (1000, 20), (1000, 8), (1000, 1000), (500, 25)])
def test_grid_and_timestep_selection_copies_agree(T, N):
    grid = SkippingGrid(T, N)
    assert pipeline_lcm.skipping_grid(T, N) == grid.timesteps.tolist()
    for strength in (1.0, 0.9, 0.8, 0.5, 0.33, 0.1, 0.02):
        for steps in range(0, min(N, 12) + 2):
            try:
                expected = grid.inference_timesteps(steps, strength)
            except ValueError:
                with pytest.raises(ValueError):
                    pipeline_lcm.select_timesteps(T, N, steps, strength)
                continue
            assert pipeline_lcm.select_timesteps(T, N, steps, strength) == expected, (steps, strength)


@pytest.mark.parametrize("N", [30, 0, 1001])
def test_grid_copy_rejects_what_canonical_rejects(N):
    with pytest.raises(ValueError):
        SkippingGrid(1000, N)
    with pytest.raises(ValueError, match="original_inference_steps"):
        pipeline_lcm.skipping_grid(1000, N)


@pytest.mark.parametrize(
    "timesteps", [[999, 499], [999], [19], [999, 759, 499, 259], [999, 500], [499, 999], [999, 999], [], [1000]]
)
def test_custom_timestep_validation_copy_agrees(timesteps):
    try:
        expected = SkippingGrid(1000, 50).validate(timesteps)
    except ValueError:
        with pytest.raises(ValueError):
            pipeline_lcm.check_timesteps(1000, 50, timesteps)
        return
    assert pipeline_lcm.check_timesteps(1000, 50, timesteps) == expected


@pytest.mark.parametrize("dim", [32, 256, 257, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_omega_embedding_copy_is_bit_identical(dim, dtype):
    omega = torch.tensor([0.0, 1.0, 2.5, 7.5, 13.999, -0.5])
    assert torch.equal(pipeline_lcm.guidance_scale_embedding(omega, dim, dtype), omega_embedding(omega, dim, dtype))
    g = 8.5
    emb = pipeline_lcm.guidance_scale_embedding(torch.tensor([g - 1]), dim)
    assert torch.equal(emb, omega_embedding(torch.tensor([omega_from_guidance_scale(g)]), dim))


@pytest.mark.parametrize("module", ["pipeline_lcm", "pipeline_lcm_sdxl"])
def test_pipeline_file_is_self_contained(module):
    """pipeline_lcm.py / pipeline_lcm_sdxl.py are shipped beside weights: they may import only the stdlib, torch,
    diffusers and transformers."""
    import importlib

    tree = ast.parse(inspect.getsource(importlib.import_module(f"lcm_distill.pipelines.{module}")))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break custom_pipeline loading"
            roots.add(node.module.split(".")[0])
    allowed = {"torch", "diffusers", "transformers", "PIL", "numpy", "huggingface_hub"}
    assert roots - allowed <= set(sys.stdlib_module_names), roots - allowed - set(sys.stdlib_module_names)


# --- noise_fraction ----------------------------------------------------------------------------------------------


def test_noise_fraction_one_is_the_lcm_default(lcm_pipe):
    default = lcm_pipe(PROMPT, generator=gen(), output_type="pt").images
    one = lcm_pipe(PROMPT, noise_fraction=1.0, generator=gen(), output_type="pt").images
    assert torch.equal(default, one)  # and default == stock diffusers: tests/pipelines/test_parity.py


def test_noise_fraction_zero_is_deterministic_after_the_initial_noise(lcm_pipe):
    start = torch.randn(1, 4, 8, 8, generator=gen(42))
    kw = dict(latents=start, num_inference_steps=4, noise_fraction=0.0, output_type="pt")
    a = lcm_pipe(PROMPT, generator=gen(0), **kw).images
    b = lcm_pipe(PROMPT, generator=gen(1), **kw).images
    c = lcm_pipe(PROMPT, generator=None, **kw).images
    assert torch.equal(a, b) and torch.equal(a, c)
    lcm1 = lcm_pipe(PROMPT, latents=start, num_inference_steps=4, generator=gen(0), output_type="pt").images
    lcm2 = lcm_pipe(PROMPT, latents=start, num_inference_steps=4, generator=gen(1), output_type="pt").images
    assert not torch.equal(lcm1, lcm2)  # the LCM default re-noises from the generator
    assert not torch.equal(a, lcm1)


def test_intermediate_noise_fraction_is_seeded_and_stochastic(lcm_pipe):
    start = torch.randn(1, 4, 8, 8, generator=gen(42))
    kw = dict(latents=start, noise_fraction=0.3, output_type="pt")
    a, a2, b = (lcm_pipe(PROMPT, generator=gen(s), **kw).images for s in (0, 0, 1))
    assert torch.equal(a, a2) and not torch.equal(a, b)


def test_single_step_ignores_noise_fraction(lcm_pipe):
    a = lcm_pipe(PROMPT, num_inference_steps=1, noise_fraction=0.0, generator=gen(), output_type="pt").images
    b = lcm_pipe(PROMPT, num_inference_steps=1, noise_fraction=1.0, generator=gen(), output_type="pt").images
    assert torch.equal(a, b)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_step_equals_diffusers_tcd_scheduler(lcm_pipe, gamma, index):
    """The oracle is diffusers' TCDScheduler.step (strategic stochastic sampling, eta = its gamma): it denoises to x0,
    moves deterministically to s' = floor((1 - gamma) s) and re-noises s' -> s with fresh z. Our noise_fraction is
    the same move parametrised by SNR: noise_fraction = 1 - SNR(s) / SNR(s') (gamma 0 -> 0, DDIM; gamma 1 -> 1,
    the LCM step). TCD skips the LCM boundary scalings; at these t, c_skip < 1e-8, so D = x0 to float rounding."""
    from diffusers import TCDScheduler

    tcd = TCDScheduler.from_config(lcm_pipe.scheduler.config)
    tcd.set_timesteps(4)
    t, s = tcd.timesteps[index], tcd.timesteps[index + 1]
    acp = tcd.alphas_cumprod
    s_prime = torch.floor((1 - torch.tensor(gamma)) * s).long()
    snr = acp / (1 - acp)
    noise_fraction = float(1 - snr[s] / snr[s_prime])
    x = torch.randn(2, 4, 8, 8, generator=gen(5))
    out = torch.randn(2, 4, 8, 8, generator=gen(6))
    tcd._step_index = index
    expected = tcd.step(out, t, x, eta=gamma, generator=gen(9)).prev_sample
    ours, _ = lcm_pipe.consistency_step(out, t, x, s, noise_fraction=noise_fraction, generator=gen(9))
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)
    if 0 < gamma < 1:  # the mapping matters: gamma itself as noise_fraction is a different move
        wrong, _ = lcm_pipe.consistency_step(out, t, x, s, noise_fraction=gamma, generator=gen(9))
        assert (wrong - expected).abs().max() > 1e-3
