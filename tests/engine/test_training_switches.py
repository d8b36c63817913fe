"""Every training switch runs: one or two steps with each, on the tiny kit (CPU)."""

from __future__ import annotations

import pytest
import torch

from lcm_distill.engine import train


@pytest.mark.parametrize(
    "overrides",
    [
        ("train.mixed_precision=bf16",),
        ("model.frozen_dtype=bf16",),
        ("model.frozen_dtype=fp16", "objective.solver=dpm_solver_pp_2s"),
        ("model.gradient_checkpointing=true", "model.attention=eager"),
        ("model.cond_proj_init=random", "objective.loss=l1", "objective.solver=dpm_solver_2",
         "objective.cfg_placement=guided"),
        ("data.center_crop=true", "data.random_flip=false", "data.interpolation=bicubic", "data.max_samples=8",
         "data.num_workers=1"),
        ("objective.num_points=20", "optim.lr_scheduler=cosine", "optim.lr_warmup_steps=1", "optim.weight_decay=0.01"),
    ],
    ids=["bf16-autocast", "frozen-bf16", "frozen-fp16-dpmpp", "ckpt-eager", "random-l1-dpm2-guided", "data",
         "grid20-cosine"],
)  # fmt: skip
def test_switch_runs(make_cfg, overrides):
    result = train(make_cfg(*overrides))
    assert result.status == "finished" and len(result.losses) == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_separate_vae_tensorboard_and_periodic_validation(make_cfg, teacher_dirs):
    cfg = make_cfg(f"model.vae={teacher_dirs['epsilon'] / 'vae'}", "train.report_to=tensorboard",
                   "train.validation_every=1", "train.validation_prompts=['a blue stripe']",
                   "train.validation_steps=[1]", "train.log_every=1")  # fmt: skip
    out = train(cfg).output_dir
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    assert {p.name for p in (out / "validation").iterdir()} >= {"step-00000001-student.png", "step-00000002-target.png"}


def test_8bit_adam_without_bitsandbytes_says_what_to_install(make_cfg):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install bitsandbytes"):
            train(make_cfg("optim.use_8bit_adam=true"))
    else:  # pragma: no cover - only where bitsandbytes is installed
        assert train(make_cfg("optim.use_8bit_adam=true")).status == "finished"


@pytest.mark.parametrize(("rank", "alpha"), [(4, 4), (4, 8), (8, 2)])
def test_lora_run_exports_weights_for_load_lora_weights(make_cfg, teacher_dirs, rank, alpha):
    """Stock load_lora_weights must apply the saved LoRA at its trained scale alpha / rank (metadata in the file)."""
    from diffusers import StableDiffusionPipeline

    cfg = make_cfg("model.lora.enabled=true", f"model.lora.rank={rank}", f"model.lora.alpha={alpha}",
                   "train.ema_decay=0", "train.export=true", "optim.learning_rate=1e-2")  # fmt: skip
    result = train(cfg)
    out = result.output_dir
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists() and not (out / "target").exists()
    pipe = StableDiffusionPipeline.from_pretrained(teacher_dirs["epsilon"])
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        before = pipe.unet(x, t, encoder_hidden_states=ctx).sample
        pipe.load_lora_weights(out / "lora")
        after = pipe.unet(x, t, encoder_hidden_states=ctx).sample
    from diffusers import UNet2DConditionModel

    merged = UNet2DConditionModel.from_pretrained(out / "student", subfolder="unet")
    assert merged.config.time_cond_proj_dim is None
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t, encoder_hidden_states=ctx).sample, after, atol=1e-5, rtol=0)
    assert (after - before).abs().max() > 1e-3
