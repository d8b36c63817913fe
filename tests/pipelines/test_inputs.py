"""Bad inputs raise ValueErrors that name what to change; the documented call options behave as stated."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from lcm_distill.pipelines import LCMPipeline

PROMPTS = ["a photo of a cat", "a red car on a road"]
IMAGE = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_inference_steps=0), r"num_inference_steps=0 must be at least 1"),
        (dict(num_inference_steps=51), r"exceeds the 50 grid points.*use fewer steps"),
        (dict(image=IMAGE, strength=0.1, num_inference_steps=6), r"exceeds the 5 grid points.*larger strength"),
        (dict(image=IMAGE, strength=0.0), r"strength=0.0 must lie in \(0, 1\]"),
        (dict(image=IMAGE, strength=1.5), r"strength=1.5 must lie in \(0, 1\]"),
        (dict(image=IMAGE, strength=-0.2), r"must lie in \(0, 1\]"),
        (dict(strength=0.5), r"only applies to img2img; pass `image=`"),
        (dict(timesteps=[999, 500]), r"\[500\] are not on the training grid \(k=20: 19, 39, \.\.\., 999\)"),
        (dict(timesteps=[499, 999]), r"must be strictly descending"),
        (dict(timesteps=[]), r"must not be empty"),
        (dict(image=IMAGE, strength=0.2, timesteps=[999, 499]), r"keeps none of the 2 custom timesteps; raise"),
        (dict(noise_fraction=1.5), r"noise_fraction=1.5 must lie in \[0, 1\]"),
        (dict(output_type="jpg"), r"output_type='jpg' must be one of"),
        (dict(height=15), r"height=15 must be a positive multiple of 2"),
        (dict(num_images_per_prompt=0), r"num_images_per_prompt=0 must be at least 1"),
        (dict(generator=[gen(0), gen(1), gen(2)]), r"3 generators for 2 images"),
        (dict(latents=torch.zeros(3, 4, 8, 8)), r"`latents` has batch 3 but the prompts ask for 2"),
        (dict(image=torch.rand(3, 3, 16, 16)), r"3 images for 2 prompts; pass one image or one per prompt"),
        (dict(callback_on_step_end_tensor_inputs=["noise"]), r"\['noise'\] not allowed"),
    ],
)
def test_bad_inputs_raise_value_errors_saying_what_to_change(lcm_pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        lcm_pipe(PROMPTS, **{"output_type": "latent", **kwargs})


def test_prompt_and_prompt_embeds(lcm_pipe):
    with pytest.raises(ValueError, match=r"exactly one of `prompt`.*or `prompt_embeds`"):
        lcm_pipe(output_type="latent")
    embeds = lcm_pipe.encode_prompt(PROMPTS, torch.device("cpu"))
    with pytest.raises(ValueError, match="exactly one of `prompt`"):
        lcm_pipe(PROMPTS, prompt_embeds=embeds, output_type="latent")
    with pytest.raises(ValueError, match="non-empty list of strings"):
        lcm_pipe([], output_type="latent")
    with pytest.raises(ValueError, match=r"`latents` has batch 1 but the prompts ask for 2"):
        lcm_pipe(prompt_embeds=embeds, latents=torch.zeros(1, 4, 8, 8), output_type="latent")
    with pytest.raises(ValueError, match=r"2 images for 1 prompts"):  # prompt_embeds batch vs image batch
        lcm_pipe(prompt_embeds=embeds[:1], image=torch.rand(2, 3, 16, 16), output_type="latent")
    via_text = lcm_pipe(PROMPTS, num_images_per_prompt=2, generator=gen(), output_type="latent").images
    via_embeds = lcm_pipe(prompt_embeds=embeds, num_images_per_prompt=2, generator=gen(), output_type="latent").images
    assert via_text.shape == (4, 4, 8, 8)
    assert torch.equal(via_text, via_embeds)


def test_grid_size_comes_from_scheduler_config(make_components):
    from diffusers import LCMScheduler

    comps = make_components()
    comps["scheduler"] = LCMScheduler.from_config(comps["scheduler"].config, original_inference_steps=100)
    pipe = LCMPipeline(**comps)
    assert pipe.num_grid_points == 100
    assert pipe.get_timesteps(4) == [999, 749, 499, 249]
    comps["scheduler"] = LCMScheduler.from_config(comps["scheduler"].config, original_inference_steps=30)
    with pytest.raises(ValueError, match=r"original_inference_steps=30.*must divide num_train_timesteps=1000"):
        LCMPipeline(**comps)("x", output_type="latent")


def test_output_types(lcm_pipe):
    kw = dict(num_inference_steps=2, num_images_per_prompt=1)
    pil = lcm_pipe(PROMPTS, generator=gen(), **kw).images
    npy = lcm_pipe(PROMPTS, generator=gen(), output_type="np", **kw).images
    pt = lcm_pipe(PROMPTS, generator=gen(), output_type="pt", **kw).images
    lat = lcm_pipe(PROMPTS, generator=gen(), output_type="latent", **kw).images
    assert [im.size for im in pil] == [(16, 16)] * 2 and all(isinstance(im, PIL.Image.Image) for im in pil)
    assert npy.shape == (2, 16, 16, 3) and pt.shape == (2, 3, 16, 16) and lat.shape == (2, 4, 8, 8)
    np.testing.assert_array_equal(npy, pt.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(np.asarray(pil[0]), (npy[0] * 255).round().astype(np.uint8))
    img, nsfw = lcm_pipe(PROMPTS, generator=gen(), output_type="pt", return_dict=False, **kw)
    assert torch.equal(img, pt) and nsfw is None


def test_height_width_and_generator_lists(lcm_pipe):
    out = lcm_pipe(PROMPTS[0], height=24, width=32, num_inference_steps=1, output_type="pt", generator=gen()).images
    assert out.shape == (1, 3, 24, 32)
    both = lcm_pipe(PROMPTS, generator=[gen(1), gen(2)], output_type="latent").images
    one = lcm_pipe(PROMPTS[1], generator=[gen(2)], output_type="latent").images
    # per-image generators make each image independent of its batch (up to batched-matmul rounding)
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-4)
    other = lcm_pipe(PROMPTS[1], generator=[gen(3)], output_type="latent").images
    assert (other - one).abs().max() > 1e-2


def test_callback_on_step_end(lcm_pipe):
    calls = []

    def callback(pipe, i, t, tensors):
        calls.append((i, int(t), sorted(tensors)))
        if i == 3:
            return {"denoised": torch.zeros_like(tensors["denoised"])}
        return {}

    inputs = ["latents", "denoised", "w_embedding"]
    out = lcm_pipe(
        PROMPTS[0], callback_on_step_end=callback, callback_on_step_end_tensor_inputs=inputs, output_type="latent"
    ).images
    assert calls == [(i, t, sorted(inputs)) for i, t in enumerate([999, 759, 499, 259])]
    assert torch.count_nonzero(out) == 0  # the replaced `denoised` is what gets returned


def test_progress_bar_counts_steps(lcm_pipe, capsys):
    lcm_pipe.set_progress_bar_config(disable=False)
    lcm_pipe(PROMPTS[0], num_inference_steps=3, output_type="latent")
    assert "3/3" in capsys.readouterr().err
