"""LCMXLPipeline (pipelines/pipeline_lcm_sdxl.py): SDXL LCMs in 1-8 steps with negative prompts / real CFG.

Where stock StableDiffusionXLPipeline + LCMScheduler can do the same it must draw the same images: cfg_scale 1 on any
UNet (omega embedded as g - 1 on an omega-conditioned one), and, on a UNet without the omega input (a merged
LCM-LoRA), real CFG at c = stock's CFG at guidance_scale c. Where stock cannot (CFG on an omega-conditioned UNet),
the documented combination out_neg + c (out - out_neg) is checked through the one-step output's linearity in the
model output, which a swapped cond/uncond or a different omega in the two halves breaks.
"""

from __future__ import annotations

import json

import pytest
import torch

PROMPT = "a red square"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sdxl_components(tmp_path_factory):
    """Factory: tiny SDXL components with an LCMScheduler (N = 50); the UNet with a seeded omega embedding
    (time_cond_proj_dim 32, random cond_proj) or without one."""
    from diffusers import LCMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from lcm_distill.testing import save_tiny_sdxl

    base = StableDiffusionXLPipeline.from_pretrained(save_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl"))
    scheduler = LCMScheduler.from_config(base.scheduler.config, original_inference_steps=50)

    def make(omega_dim: int | None = 32) -> dict:
        comps = dict(base.components, scheduler=scheduler)
        if omega_dim is not None:
            torch.manual_seed(1)
            unet = UNet2DConditionModel.from_config({**base.unet.config, "time_cond_proj_dim": omega_dim})
            missing, _ = unet.load_state_dict(base.unet.state_dict(), strict=False)
            assert missing and all(k.startswith("time_embedding.cond_proj") for k in missing)
            comps["unet"] = unet.eval()
        return comps

    return make


def pipes(components: dict):
    from diffusers import StableDiffusionXLPipeline
    from lcm_distill.pipelines import LCMXLPipeline

    ours, stock = LCMXLPipeline(**components), StableDiffusionXLPipeline(**components)
    for p in (ours, stock):
        p.set_progress_bar_config(disable=True)
    return ours, stock


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("omega_dim", [32, None])
def test_cfg_off_draws_what_stock_draws(sdxl_components, omega_dim, steps):
    ours, stock = pipes(sdxl_components(omega_dim))
    g = 6.0 if omega_dim else 1.0  # stock runs CFG for g > 1 on a UNet without omega: compared below
    kw = dict(num_inference_steps=steps, guidance_scale=g, output_type="np")
    a = ours([PROMPT, "blue circle"], generator=gen(0), **kw).images
    b = stock([PROMPT, "blue circle"], generator=gen(0), **kw).images
    assert abs(a - b).max() <= 1e-5
    if omega_dim:  # omega reaches the UNet: another g draws something else
        other = ours([PROMPT, "blue circle"], generator=gen(0), **{**kw, "guidance_scale": 2.0}).images
        assert abs(other - a).max() > 1e-3


@pytest.mark.parametrize("negative", [None, "a blue circle"])
def test_real_cfg_without_omega_equals_stock_cfg(sdxl_components, negative):
    """A merged LCM-LoRA UNet (no omega input): our cfg_scale c is stock's guidance_scale c, with the same negative
    branch (SDXL's zeros when no negative prompt is given, force_zeros_for_empty_prompt)."""
    ours, stock = pipes(sdxl_components(None))
    kw = dict(num_inference_steps=2, output_type="latent", negative_prompt=negative)
    a = ours(PROMPT, cfg_scale=2.5, generator=gen(3), **kw).images
    b = stock(PROMPT, guidance_scale=2.5, generator=gen(3), **kw).images
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    off = ours(PROMPT, generator=gen(3), num_inference_steps=2, output_type="latent").images
    assert (off - a).abs().max() > 1e-3  # CFG changed the sample: the equality above can fail


def test_real_cfg_on_an_omega_unet_is_the_documented_combination(sdxl_components):
    """One step is affine in the model output, so with CFG at c the result must be L_neg + c (L_pos - L_neg), where
    L_pos / L_neg are the c = 1 samples conditioned on the prompt / on the negative side, at the same omega."""
    from lcm_distill.pipelines import LCMXLPipeline

    pipe = LCMXLPipeline(**sdxl_components(32))
    pipe.set_progress_bar_config(disable=True)
    x = torch.randn(1, 4, 8, 8, generator=gen(5))
    kw = dict(latents=x, num_inference_steps=1, output_type="latent", guidance_scale=5.0)
    c = 3.0
    pos = pipe(PROMPT, **kw).images
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    zeros = pipe(prompt_embeds=torch.zeros_like(embeds), pooled_prompt_embeds=torch.zeros_like(pooled), **kw).images
    neg_prompt = pipe("a blue circle", **kw).images
    for negative, neg in ((None, zeros), ("a blue circle", neg_prompt)):
        ours = pipe(PROMPT, cfg_scale=c, negative_prompt=negative, **kw).images
        expected, swapped = neg + c * (pos - neg), pos + c * (neg - pos)
        scale = expected.abs().max()
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5 * scale)
        assert (swapped - ours).abs().max() > 1e-2 * scale
    other_omega = pipe(PROMPT, cfg_scale=c, **{**kw, "guidance_scale": 2.0}).images
    assert (other_omega - pipe(PROMPT, cfg_scale=c, **kw).images).abs().max() > 1e-3  # omega in both halves


def test_settings_are_checked_before_any_network_runs(sdxl_components):
    from diffusers import EulerDiscreteScheduler
    from lcm_distill.pipelines import LCMXLPipeline

    comps = sdxl_components(32)
    pipe = LCMXLPipeline(**comps)
    with pytest.raises(ValueError, match="cfg_scale > 1"):
        pipe(PROMPT, negative_prompt="a dog", num_inference_steps=1)
    with pytest.raises(ValueError, match=r"cfg_scale=0\.5"):
        pipe(PROMPT, cfg_scale=0.5, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"LCMScheduler\.from_config"):
        LCMXLPipeline(**{**comps, "scheduler": EulerDiscreteScheduler.from_config(comps["scheduler"].config)})(PROMPT)
    no_omega = LCMXLPipeline(**sdxl_components(None))
    no_omega.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="use cfg_scale"):
        no_omega(PROMPT, guidance_scale=4.0, num_inference_steps=1, output_type="latent")


@pytest.fixture(scope="module")
def xl_folder(sdxl_components, tmp_path_factory):
    """An omega-conditioned tiny SDXL LCM written by the exporter (save_lcm_pipeline, N = 50)."""
    from lcm_distill.export import ModelCardInfo, save_lcm_pipeline
    from lcm_distill.testing import tiny_scheduler_config

    comps = sdxl_components(32)
    return save_lcm_pipeline(tmp_path_factory.mktemp("export") / "xl-lcm", unet=comps["unet"], vae=comps["vae"],
                             text_encoder=comps["text_encoder"], tokenizer=comps["tokenizer"],
                             text_encoder_2=comps["text_encoder_2"], tokenizer_2=comps["tokenizer_2"],
                             teacher_scheduler_config=tiny_scheduler_config("epsilon"), num_points=50,
                             card=ModelCardInfo(base_model="tiny/sdxl", method="lcd"))  # fmt: skip


def test_sdxl_export_carries_the_pipeline_and_loads_both_ways(xl_folder):
    from diffusers import DiffusionPipeline, StableDiffusionXLPipeline

    folder = xl_folder
    assert (folder / "pipeline_lcm_sdxl.py").is_file()
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert 'custom_pipeline="pipeline_lcm_sdxl", trust_remote_code=True' in (folder / "README.md").read_text()
    stock = DiffusionPipeline.from_pretrained(folder)
    assert type(stock) is StableDiffusionXLPipeline
    custom = DiffusionPipeline.from_pretrained(folder, custom_pipeline="pipeline_lcm_sdxl", trust_remote_code=True)
    assert type(custom).__name__ == "LCMXLPipeline" and not type(custom).__module__.startswith("lcm_distill")
    for p in (stock, custom):
        p.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, guidance_scale=4.0, output_type="latent")
    torch.testing.assert_close(custom(PROMPT, generator=gen(1), **kw).images,
                               stock(PROMPT, generator=gen(1), **kw).images, rtol=0, atol=1e-5)  # fmt: skip
    guided = custom(PROMPT, generator=gen(1), cfg_scale=2.0, negative_prompt="blue", **kw).images
    assert torch.isfinite(guided).all()


def test_generate_command_draws_sdxl_lcms(xl_folder, tmp_path, capsys):
    """lcm-distill-generate reads the family from the folder: an SDXL LCM samples through LCMXLPipeline (with
    negative prompts); the SD-only flags are refused by name."""
    from PIL import Image

    from lcm_distill.cli.generate import main

    base = ["--model", str(xl_folder), "--prompt", "a cat", "--steps", "2"]
    assert main([*base, "--out", str(tmp_path / "a.png")]) == 0
    assert main([*base, "--cfg-scale", "2", "--negative-prompt", "a dog", "--out", str(tmp_path / "b.png")]) == 0
    a, b = (Image.open(tmp_path / f"{n}.png") for n in "ab")
    assert a.size == (16, 16) and a.tobytes() != b.tobytes()
    a.save(tmp_path / "in.png")
    for flag in (["--image", str(tmp_path / "in.png")], ["--noise-fraction", "0"]):
        with pytest.raises(SystemExit) as exc:
            main([*base, *flag, "--out", str(tmp_path / "c.png")])
        assert exc.value.code == 2 and f"{flag[0]}: SDXL" in capsys.readouterr().err


def test_step_callback_reads_and_replaces_the_loop_tensors(sdxl_components):
    """callback_on_step_end sees the tensors it names (the 2x batch under CFG) and what it returns is used."""
    from lcm_distill.pipelines import LCMXLPipeline

    pipe = LCMXLPipeline(**sdxl_components(32))
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def zero_latents(p, i, t, tensors):
        seen.append((i, {k: tuple(v.shape) for k, v in tensors.items()}))
        return {"latents": torch.zeros_like(tensors["latents"])}

    names = ["latents", "prompt_embeds", "text_embeds", "time_ids"]
    out = pipe(PROMPT, num_inference_steps=2, cfg_scale=2.0, output_type="latent", callback_on_step_end=zero_latents,
               callback_on_step_end_tensor_inputs=names).images  # fmt: skip
    assert [i for i, _ in seen] == [0, 1] and seen[0][1]["prompt_embeds"][0] == 2 and seen[0][1]["time_ids"] == (2, 6)
    assert torch.equal(out, torch.zeros_like(out))  # the last step's replacement is the result
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(PROMPT, num_inference_steps=1, callback_on_step_end=zero_latents,
             callback_on_step_end_tensor_inputs=["add_text_embeds"])  # fmt: skip
