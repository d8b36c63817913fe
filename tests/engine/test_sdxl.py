"""SDXL through the same engine: full LCD, LCM-LoRA and LCF runs end to end on a tiny SDXL folder (two text
encoders, a "text_time" UNet, VAE scaling 0.13025). The loss itself is checked against diffusers' SDXL training
step in tests/engine/test_lcd_oracle.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcm_distill.config import load_config


def sdxl_cfg(sdxl_dir, data_dir, tmp_path, *extra: str):
    base = [f"model.teacher={sdxl_dir}", "model.omega_embed_dim=32", f"data.dataset={data_dir}", "data.resolution=16",
            f"train.output_dir={tmp_path / 'run'}", "train.per_device_batch_size=2", "train.max_train_steps=2",
            "train.report_to=none", "train.validation_prompts=[]", "train.checkpoint_every=1000",
            "optim.learning_rate=1e-3", "objective.solver=ddim"]  # fmt: skip
    return load_config(None, [*base, *extra])


@pytest.mark.parametrize("mode", ["full", "lora", "lcf", "lora_bf16"])
def test_sdxl_trains_through_the_same_engine(sdxl_dir, data_dir, tmp_path, mode):
    from lcm_distill.engine import train

    extra = {"full": ("train.ema_decay=0.5", "train.validation_prompts=[a red circle]", "train.validation_every=2",
                      "train.validation_steps=[1,2]"),
             "lora": ("model.lora.enabled=true", "train.ema_decay=0.5"),
             # bf16 frozen base and encoders (the SDXL LoRA recipe's), validation through the stock SDXL pipeline
             "lora_bf16": ("model.lora.enabled=true", "train.ema_decay=0.5", "model.frozen_dtype=bf16",
                           "train.mixed_precision=bf16", "train.validation_prompts=[a red circle]",
                           "train.validation_every=2", "train.validation_steps=[1]"),
             "lcf": ("objective.kind=lcf", "train.ema_decay=0.5")}[mode]  # fmt: skip
    result = train(sdxl_cfg(sdxl_dir, data_dir, tmp_path, *extra))
    assert result.status == "finished" and len(result.losses) == 2 and all(np.isfinite(result.losses))
    if mode == "lora_bf16":
        assert (result.output_dir / "validation" / "step-00000002-student.png").is_file()
    if mode == "full":  # validation grids drawn through the SDXL pipeline (student and target)
        assert sorted(p.name for p in (result.output_dir / "validation").glob("*.png")) == [
            "step-00000002-student.png", "step-00000002-target.png"]  # fmt: skip


def test_sdxl_export_samples_in_stock_sdxl_as_it_was_trained(sdxl_dir, data_dir, tmp_path):
    """The exported student is a StableDiffusionXLPipeline folder with an LCMScheduler. Stock diffusers' one-step
    sample from given noise equals the consistency function the engine trained, f(x_T, T-1, c, omega = g - 1)
    with our conditioning (both encoders, pooled embedding, time ids): a mismatch in any part of the conditioning
    between training and stock inference would show here."""
    from diffusers import DiffusionPipeline, LCMScheduler, StableDiffusionXLPipeline

    from lcm_distill.conditioning import fixed_time_ids
    from lcm_distill.engine import load_run_models, train
    from lcm_distill.functional import omega_embedding
    from lcm_distill.objectives import consistency_output

    cfg = sdxl_cfg(sdxl_dir, data_dir, tmp_path, "train.ema_decay=0.5", "train.export=true",
                   "model.cond_proj_init=random")  # fmt: skip
    result = train(cfg)
    pipe = DiffusionPipeline.from_pretrained(result.output_dir / "student")
    assert isinstance(pipe, StableDiffusionXLPipeline) and isinstance(pipe.scheduler, LCMScheduler)
    assert pipe.scheduler.config.original_inference_steps == cfg.objective.num_points
    assert "StableDiffusionXLPipeline + LCMScheduler" in (result.output_dir / "student" / "README.md").read_text()
    prompts, g = ["a red circle", "blue square"], 6.0
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))  # 16 px, VAE factor 2
    stock = pipe(prompts, num_inference_steps=1, guidance_scale=g, latents=x, height=16, width=16,
                 output_type="latent").images  # fmt: skip
    models = load_run_models(cfg)
    cond = models.encode_prompts(prompts).with_time_ids(fixed_time_ids(2, 16))
    t = torch.full((2,), pipe.scheduler.timesteps[0].item())
    with torch.no_grad():
        ours = consistency_output(pipe.unet, x, t, cond, omega_embedding(torch.full((2,), g - 1), 32),
                                  models.schedule)  # fmt: skip
    torch.testing.assert_close(stock, ours, atol=1e-5, rtol=1e-5)
    assert (stock - x).abs().max() > 1e-2  # a real step
    from lcm_distill.evaluation.generation import generate, load_pipeline  # what lcm-distill-evaluate/-generate use

    images = generate(load_pipeline(str(result.output_dir / "student"), "lcm"), prompts, 2, g, height=16, width=16)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_sdxl_lora_export_loads_in_stock_sdxl(sdxl_dir, data_dir, tmp_path):
    """lora/ loads through stock StableDiffusionXLPipeline.load_lora_weights on the SDXL base and draws what the
    merged student/ draws (fused vs unfused adapters)."""
    from diffusers import DiffusionPipeline, LCMScheduler, StableDiffusionXLPipeline

    from lcm_distill.engine import train

    cfg = sdxl_cfg(sdxl_dir, data_dir, tmp_path, "model.lora.enabled=true", "train.ema_decay=0", "train.export=true",
                   "objective.omega_fixed=3", "optim.learning_rate=5e-2")  # fmt: skip
    result = train(cfg)
    merged = DiffusionPipeline.from_pretrained(result.output_dir / "student")
    kw = dict(num_inference_steps=2, height=16, width=16, output_type="latent", guidance_scale=1.0)
    ours = merged("a red square", generator=torch.Generator().manual_seed(0), **kw).images
    stock = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    stock.scheduler = LCMScheduler.from_config(merged.scheduler.config)
    plain = stock("a red square", generator=torch.Generator().manual_seed(0), **kw).images
    stock.load_lora_weights(result.output_dir / "lora")
    theirs = stock("a red square", generator=torch.Generator().manual_seed(0), **kw).images
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert (plain - ours).abs().max() > 1e-3  # the adapters changed what is drawn: the check above can fail
    # the kohya file (ComfyUI / AUTOMATIC1111 keys, lora_unet_<diffusers module>) has the same effect on SDXL
    from lcm_distill.export import KOHYA_FILE

    stock.unload_lora_weights()
    stock.load_lora_weights(result.output_dir / "lora", weight_name=KOHYA_FILE)
    kohya = stock("a red square", generator=torch.Generator().manual_seed(0), **kw).images
    torch.testing.assert_close(kohya, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["sample", "fixed"])
def test_sdxl_time_ids_reach_student_teacher_and_target(sdxl_dir, data_dir, tmp_path, mode):
    """data.sdxl_time_ids: the batch's per-sample time ids ("sample") or (r, r, 0, 0, r, r) ("fixed") reach the
    student, both halves of the teacher's [cond; uncond] forward and the target."""
    from lcm_distill.engine import load_run_models
    from lcm_distill.objectives import ConsistencyStep, StepNoise

    cfg = sdxl_cfg(sdxl_dir, data_dir, tmp_path, "train.ema_decay=0.5", f"data.sdxl_time_ids={mode}")
    models = load_run_models(cfg)
    seen = {}

    def spy(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, []).append(kwargs["added_cond_kwargs"]["time_ids"].clone())
        return hook

    for name in ("student", "teacher", "target"):
        getattr(models, name).register_forward_pre_hook(spy(name), with_kwargs=True)
    sample_ids = torch.tensor([[512.0, 768, 3, 40, 16, 16], [300, 200, 0, 0, 16, 16]])
    batch = {"pixel_values": torch.zeros(2, 3, 16, 16), "captions": ["a", "b"], "time_ids": sample_ids}
    start = torch.tensor([519, 39])
    z = torch.randn(2, *models.latent_shape(16))
    noise = StepNoise(start, start - 20, torch.tensor([3.0, 5.0]), z, torch.zeros_like(z))
    ConsistencyStep(models, cfg.objective, 16, sdxl_time_ids=cfg.data.sdxl_time_ids)(batch, noise)
    expected = sample_ids if mode == "sample" else torch.tensor([[16.0, 16, 0, 0, 16, 16]] * 2)
    assert torch.equal(seen["student"][0], expected) and torch.equal(seen["target"][0], expected)
    assert all(torch.equal(ids, torch.cat([expected, expected])) for ids in seen["teacher"])


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sdxl_resume_reproduces_the_uninterrupted_run_bitwise(sdxl_dir, data_dir, tmp_path, mode):
    """The reliability guarantee for SDXL: stop at step 2, resume to 4 = 4 steps straight (losses and exported
    weights, bitwise), with per-sample time ids and the pooled embedding in the batches."""
    from safetensors.torch import load_file

    from lcm_distill.engine import train

    over = ["train.max_train_steps=4", "train.export=true", "train.ema_decay=0.9", "train.checkpoint_every=2",
            "data.random_flip=true", *(["model.lora.enabled=true"] if mode == "lora" else [])]  # fmt: skip
    full = train(sdxl_cfg(sdxl_dir, data_dir, tmp_path / "full", *over))
    part = sdxl_cfg(sdxl_dir, data_dir, tmp_path / "part", *over)
    assert train(part, stop_after=2).status == "interrupted"
    second = train(part, resume="latest")
    assert second.step == 4 and second.losses == full.losses[2:]
    weights = "student/unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(full.output_dir / weights)), load_file(str(second.output_dir / weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
