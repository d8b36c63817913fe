"""LCMPipeline against stock diffusers on identical tiny components and seeds.

Tolerance: exact (torch.equal). Our step repeats LCMScheduler.step's arithmetic term for term and draws noise in the
same order, so any difference at all means a behavioural divergence, not rounding.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    LatentConsistencyModelImg2ImgPipeline,
    LatentConsistencyModelPipeline,
    LCMScheduler,
    StableDiffusionPipeline,
)
from lcm_distill.pipelines import LCMPipeline

from lcm_distill.functional import omega_embedding

PROMPTS = ["a photo of a cat", "a red car on a road"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def stock(cls, comps):
    pipe = cls(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ours(comps) -> LCMPipeline:
    pipe = LCMPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert torch.equal(a, b), f"max |diff| = {(a - b).abs().max().item():.3e} (expected exactly 0)"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_txt2img_equals_stock_lcm_pipeline(make_components, prediction_type, steps):
    comps = make_components(prediction_type)
    kwargs = dict(num_inference_steps=steps, guidance_scale=6.0, num_images_per_prompt=2, output_type="pt")
    ref = stock(LatentConsistencyModelPipeline, comps)(PROMPTS, generator=gen(), **kwargs).images
    out = ours(comps)(PROMPTS, generator=gen(), **kwargs).images
    assert out.shape == (4, 3, 16, 16)
    assert_same(out, ref)


@pytest.mark.parametrize("guidance_scale", [0.0, 0.5])
def test_guidance_below_one_is_accepted_with_a_warning_like_stock(make_components, guidance_scale):
    """Stock accepts g < 1 (embeds omega = g - 1 < 0); ours matches it to the bit and warns that omega < 0 is untrained
    (it raised before). NaN stays an error."""
    comps = make_components()
    kwargs = dict(num_inference_steps=2, guidance_scale=guidance_scale, output_type="pt")
    ref = stock(LatentConsistencyModelPipeline, comps)(PROMPTS[0], generator=gen(), **kwargs).images
    with pytest.warns(UserWarning, match=r"omega = g - 1 = -"):
        out = ours(comps)(PROMPTS[0], generator=gen(), **kwargs).images
    assert_same(out, ref)
    one = ours(comps)(PROMPTS[0], generator=gen(), num_inference_steps=2, guidance_scale=1.0, output_type="pt")
    assert not torch.equal(out, one.images)  # omega -1 is not "no guidance"
    with pytest.raises(ValueError, match=r"NaN"):
        ours(comps)(PROMPTS[0], guidance_scale=float("nan"))


def test_latent_output_and_default_guidance_equal_stock(make_components):
    comps = make_components()
    ref = stock(LatentConsistencyModelPipeline, comps)(PROMPTS[0], generator=gen(3), output_type="latent").images
    out = ours(comps)(PROMPTS[0], generator=gen(3), output_type="latent").images  # both default to 4 steps, g=8.5
    assert_same(out, ref)


def test_custom_timesteps_equal_n_steps_and_stock(make_components):
    comps = make_components()
    ref = stock(LatentConsistencyModelPipeline, comps)(
        PROMPTS[0], timesteps=[999, 499], generator=gen(), output_type="pt"
    )
    custom = ours(comps)(PROMPTS[0], timesteps=[999, 499], generator=gen(), output_type="pt").images
    two = ours(comps)(PROMPTS[0], num_inference_steps=2, generator=gen(), output_type="pt").images
    assert_same(custom, ref.images)
    assert_same(custom, two)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("strength", [1.0, 0.8, 0.5, 0.3, 0.16])
def test_timesteps_equal_lcmscheduler(lcm_pipe, steps, strength):
    scheduler = LCMScheduler.from_config(lcm_pipe.scheduler.config)
    if steps > int(50 * strength):
        with pytest.raises(ValueError):
            scheduler.set_timesteps(steps, strength=strength)
        with pytest.raises(ValueError, match="fewer steps or a larger strength"):
            lcm_pipe.get_timesteps(steps, strength)
        return
    scheduler.set_timesteps(steps, strength=strength)
    assert lcm_pipe.get_timesteps(steps, strength) == scheduler.timesteps.tolist()


@pytest.mark.parametrize("strength", [1.0, 0.75, 0.5, 0.34])
def test_custom_timesteps_with_strength_equal_lcmscheduler(lcm_pipe, strength):
    custom = [999, 759, 499, 259]
    scheduler = LCMScheduler.from_config(lcm_pipe.scheduler.config)
    scheduler.set_timesteps(timesteps=custom, strength=strength)
    assert lcm_pipe.get_timesteps(timesteps=custom, strength=strength) == scheduler.timesteps.tolist()


def test_known_schedules(lcm_pipe):
    assert lcm_pipe.get_timesteps(4) == [999, 759, 499, 259]
    assert lcm_pipe.get_timesteps(8) == [999, 879, 759, 639, 499, 379, 259, 139]
    assert lcm_pipe.get_timesteps(4, strength=0.8) == [799, 599, 399, 199]


@pytest.mark.parametrize(("steps", "strength"), [(4, 0.8), (2, 0.5), (1, 0.3)])
def test_img2img_equals_stock(make_components, steps, strength):
    comps = make_components()
    image = torch.rand(1, 3, 16, 16, generator=gen(1))
    kw = dict(image=image, strength=strength, num_inference_steps=steps, guidance_scale=4.0, output_type="pt")
    ref = stock(LatentConsistencyModelImg2ImgPipeline, comps)(PROMPTS[0], generator=gen(), **kw).images
    out = ours(comps)(PROMPTS[0], generator=gen(), **kw).images
    assert_same(out, ref)


def test_img2img_initial_latent_is_add_noise_at_first_timestep(make_components):
    """Independent of stock: the UNet's first input is add_noise(VAE sample of the image, z, timesteps[0])."""
    pipe = ours(make_components())
    image = torch.rand(1, 3, 16, 16, generator=gen(1))
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: seen.append((args[0].clone(), int(args[1]))))
    try:
        pipe(PROMPTS[0], image=image, strength=0.5, num_inference_steps=2, generator=gen(7), output_type="latent")
    finally:
        hook.remove()
    g = gen(7)
    x0 = pipe.vae.encode(pipe.image_processor.preprocess(image)).latent_dist.sample(g) * pipe.vae.config.scaling_factor
    z = torch.randn(x0.shape, generator=g)
    expected = LCMScheduler.from_config(pipe.scheduler.config).add_noise(x0, z, torch.tensor([499]))
    assert [t for _, t in seen] == [499, 259]
    torch.testing.assert_close(seen[0][0], expected, rtol=0, atol=1e-6)


def test_guidance_scale_embeds_omega_minus_one(lcm_pipe):
    """guidance_scale g reaches the UNet as the canonical omega embedding of g - 1 (training's convention)."""
    seen = []
    hook = lcm_pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["timestep_cond"]), with_kwargs=True)
    try:
        lcm_pipe(PROMPTS, num_inference_steps=1, guidance_scale=7.5, generator=gen(), output_type="latent")
    finally:
        hook.remove()
    assert torch.equal(seen[0], omega_embedding(torch.full((2,), 6.5), 32))


def test_no_omega_unet_samples_without_cfg(make_components):
    """A UNet without time_cond_proj_dim: stock LCM pipeline crashes; ours equals SD + LCMScheduler at g=1 and warns
    when a guidance_scale cannot have an effect."""
    comps = make_components(time_cond_proj_dim=None)
    with pytest.raises(TypeError):
        stock(LatentConsistencyModelPipeline, comps)(PROMPTS[0], num_inference_steps=1, output_type="latent")
    sd = stock(StableDiffusionPipeline, comps)
    ref = sd(PROMPTS[0], num_inference_steps=4, guidance_scale=1.0, generator=gen(), output_type="pt").images
    pipe = ours(comps)
    with pytest.warns(UserWarning, match="has no effect"):
        warned = pipe(PROMPTS[0], guidance_scale=8.5, generator=gen(), output_type="pt").images
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = pipe(PROMPTS[0], generator=gen(), output_type="pt").images
        one = pipe(PROMPTS[0], guidance_scale=1.0, generator=gen(), output_type="pt").images
    assert_same(plain, ref)
    assert_same(warned, ref)
    assert_same(one, ref)
