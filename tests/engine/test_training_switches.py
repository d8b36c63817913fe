"""Every training switch runs: one or two steps with each, on the tiny kit (CPU)."""

from __future__ import annotations

import pytest
import torch

from lcm_distill.config import ConfigError
from lcm_distill.engine import train


@pytest.mark.parametrize(
    "overrides",
    [
        ("train.mixed_precision=bf16",),
        ("model.frozen_dtype=bf16",),
        ("model.frozen_dtype=fp16", "objective.solver=dpm_solver_pp_2s"),
        ("model.gradient_checkpointing=true", "model.attention=eager", "model.channels_last=true"),
        ("model.cond_proj_init=random", "objective.loss=l1", "objective.solver=dpm_solver_2",
         "objective.cfg_placement=guided"),
        ("data.center_crop=true", "data.random_flip=false", "data.interpolation=bicubic", "data.max_samples=8",
         "data.num_workers=1"),
        ("objective.num_points=20", "optim.lr_scheduler=cosine", "optim.lr_warmup_steps=1", "optim.weight_decay=0.01"),
        ("objective.timestep_sampling=high_noise", "objective.loss=pseudo_huber"),
    ],
    ids=["bf16-autocast", "frozen-bf16", "frozen-fp16-dpmpp", "ckpt-eager", "random-l1-dpm2-guided", "data",
         "grid20-cosine", "high-noise-pseudo-huber"],
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


@pytest.mark.parametrize("lora", [None, "plain", "omega"], ids=["full", "lora", "omega-lora"])
def test_frozen_bf16_run_validates_and_exports(make_cfg, lora):
    """Validation samples with an fp32 student beside a bf16 VAE / text encoder (found by the SD-2.1 scale
    rehearsal: the pipeline fed bf16 embeddings to the fp32 UNet and crashed after training)."""
    import numpy as np
    from diffusers import DiffusionPipeline
    from PIL import Image

    extra = ("model.lora.enabled=true", "train.ema_decay=0", "train.mixed_precision=bf16") if lora else ()
    extra += ("model.lora.omega_conditioned=true",) if lora == "omega" else ()
    cfg = make_cfg("model.frozen_dtype=bf16", "train.validation_prompts=['a red square']",
                   "train.validation_steps=[1,2]", "train.export=true", *extra)  # fmt: skip
    out = train(cfg).output_dir
    grids = sorted((out / "validation").iterdir())
    assert grids and all(np.asarray(Image.open(g)).std() > 0 for g in grids)
    # stock diffusers runs each component in its stored dtype: the export must not mix a bf16 VAE / text encoder
    # with the fp32 UNet (it did, and stock sampling crashed)
    pipe = DiffusionPipeline.from_pretrained(out / "student")
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    guidance = 1.0 if lora == "plain" else 8.0
    img = pipe("a red square", num_inference_steps=1, height=16, width=16, output_type="np",
               guidance_scale=guidance).images  # fmt: skip
    assert np.isfinite(img).all()
    if lora:  # student/ (merged) must draw what the fp32 base + lora/ draws in stock diffusers
        from diffusers import LCMScheduler, StableDiffusionPipeline

        from lcm_distill.export import load_omega_lora

        if lora == "omega":  # the base gains the saved omega input, then stock load_lora_weights
            stock = load_omega_lora(cfg.model.teacher, out / "lora")
        else:
            stock = StableDiffusionPipeline.from_pretrained(cfg.model.teacher, safety_checker=None)
            stock.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
            stock.load_lora_weights(out / "lora")
        stock.set_progress_bar_config(disable=True)
        kw = dict(num_inference_steps=2, height=16, width=16, output_type="latent", guidance_scale=guidance)
        a = stock("a red square", generator=torch.Generator().manual_seed(0), **kw).images
        b = pipe("a red square", generator=torch.Generator().manual_seed(0), **kw).images
        # fused vs unfused adapters round differently (seen: 1.3e-5 after 2 steps); fusing into the bf16 copy is
        # ~0.09 off on this kit, so 1e-4 still tells the two apart by three orders of magnitude
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_8bit_adam_without_bitsandbytes_says_what_to_install(make_cfg, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        train(make_cfg("optim.use_8bit_adam=true"))


def test_8bit_adam_trains_with_8bit_states(make_cfg):
    """bitsandbytes (pinned in requirements.txt) runs its 8-bit AdamW on CPU too: the states are uint8."""
    from lcm_distill.engine import build_optimizer

    cfg = make_cfg("optim.use_8bit_adam=true")
    result = train(cfg)
    assert result.status == "finished" and all(torch.isfinite(torch.tensor(result.losses)))
    p = torch.nn.Parameter(torch.randn(64, 64))
    opt = build_optimizer([p], cfg)
    p.grad = torch.randn_like(p)
    opt.step()
    assert type(opt).__name__ == "AdamW8bit" and opt.state[p]["state1"].dtype == torch.uint8


@pytest.mark.parametrize("impl", ["fused", "foreach", "loop"])
def test_adamw_impl_picks_the_kernel(make_cfg, impl):
    from lcm_distill.engine import build_optimizer

    opt = build_optimizer([torch.nn.Parameter(torch.zeros(3))], make_cfg(f"optim.adamw_impl={impl}"))
    group = opt.param_groups[0]
    assert (bool(group["fused"]), bool(group["foreach"])) == {"fused": (True, False), "foreach": (False, True),
                                                             "loop": (False, False)}[impl]  # fmt: skip


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
    # The kohya file (ComfyUI / AUTOMATIC1111 keys, the trained alpha) has the same effect through stock loading.
    from lcm_distill.export import KOHYA_FILE

    kohya = StableDiffusionPipeline.from_pretrained(teacher_dirs["epsilon"])
    kohya.load_lora_weights(out / "lora", weight_name=KOHYA_FILE)
    with torch.no_grad():
        torch.testing.assert_close(kohya.unet(x, t, encoder_hidden_states=ctx).sample, after, atol=1e-5, rtol=0)
    assert "lora_unet_" in next(iter(safetensors_keys(out / "lora" / KOHYA_FILE)))


def safetensors_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_lora_formats_diffusers_only_writes_no_kohya_file(make_cfg):
    from lcm_distill.export import KOHYA_FILE

    cfg = make_cfg("model.lora.enabled=true", "model.lora.rank=4", "train.ema_decay=0", "train.export=true",
                   "train.lora_formats=[diffusers]")
    out = train(cfg).output_dir
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists() and not (out / "lora" / KOHYA_FILE).exists()
    assert KOHYA_FILE not in (out / "lora" / "README.md").read_text()
    with pytest.raises(ConfigError, match=r"train.lora_formats"):
        make_cfg("train.lora_formats=[kohya]")


def test_lora_folders_load_and_sample_in_stock_diffusers_as_their_cards_say(make_cfg, teacher_dirs, monkeypatch):
    """student/ (merged, no omega input) loads as stock StableDiffusionPipeline + LCMScheduler; lora/ carries a card
    whose snippet (base model + LCMScheduler + load_lora_weights) draws the same images; targets used omega 7.5."""
    from diffusers import DiffusionPipeline, LCMScheduler

    cfg = make_cfg("model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=8", "train.ema_decay=0",
                   "train.export=true", "optim.learning_rate=1e-2")  # fmt: skip
    assert cfg.objective.omega_fixed == 7.5  # "auto" for a LoRA student
    out = train(cfg).output_dir
    merged = DiffusionPipeline.from_pretrained(out / "student")
    assert type(merged).__name__ == "StableDiffusionPipeline" and isinstance(merged.scheduler, LCMScheduler)
    card = (out / "lora" / "README.md").read_text()
    assert "guidance_scale=1.0" in card and "ω = 7.5" in card and "original_inference_steps=50" in card
    assert "guidance_scale=1.0" in (out / "student" / "README.md").read_text()
    base = DiffusionPipeline.from_pretrained(teacher_dirs["epsilon"])  # the card's snippet, on the tiny teacher
    base.scheduler = LCMScheduler.from_config(base.scheduler.config, original_inference_steps=50)
    # The card's load line, from the Hub offline (the folder pushed as me/lcm-lora, in a hub cache as huggingface_hub
    # lays it out): it names weight_name, without which diffusers refuses a hub id offline.
    import huggingface_hub

    from lcm_distill.export import KOHYA_FILE
    from lcm_distill.testing.hub_cache import add_to_hub_cache

    assert 'load_lora_weights("<your-username>/<your-lcm>", weight_name="pytorch_lora_weights.safetensors")' in card
    assert KOHYA_FILE in card and "sampler `lcm`" in card and "`LCM`" in card
    hub = out.parent / "hub"
    add_to_hub_cache(hub, "me/lcm-lora", out / "lora")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    with pytest.raises(ValueError, match="weight_name"):
        base.load_lora_weights("me/lcm-lora")
    base.load_lora_weights("me/lcm-lora", weight_name="pytorch_lora_weights.safetensors")
    kw = dict(num_inference_steps=2, guidance_scale=1.0, height=16, width=16, output_type="np")
    a = merged("a red square", generator=torch.Generator().manual_seed(0), **kw).images
    b = base("a red square", generator=torch.Generator().manual_seed(0), **kw).images
    assert abs(a - b).max() < 1e-4


def test_omega_fixed_draws_one_omega_and_keeps_the_random_stream(make_cfg):
    from lcm_distill.engine import load_run_models
    from lcm_distill.objectives import ConsistencyStep

    ranged, fixed = make_cfg(), make_cfg("objective.omega_fixed=3")
    assert ranged.objective.omega_fixed is None  # "auto" for an omega-conditioned student: the range
    models = load_run_models(ranged)
    a = ConsistencyStep(models, ranged.objective, 16).draw(0, 5, 8)
    b = ConsistencyStep(models, fixed.objective, 16).draw(0, 5, 8)
    assert torch.equal(b.omega, torch.full((8,), 3.0)) and a.omega.min() >= 2 and a.omega.std() > 0
    assert torch.equal(a.noise, b.noise) and torch.equal(a.start, b.start)
    for bad in ("objective.omega_fixed=sometimes", "objective.omega_fixed=-1"):
        with pytest.raises(ConfigError, match=r"objective\.omega_fixed"):
            make_cfg(bad)


def test_lora_base_weights_follow_frozen_dtype_and_adapters_stay_fp32(make_cfg):
    from lcm_distill.engine import load_run_models

    args = ("model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=4", "train.ema_decay=0",
            "model.frozen_dtype=bf16")  # fmt: skip
    with pytest.raises(ConfigError, match=r"train\.mixed_precision"):
        make_cfg(*args)
    cfg = make_cfg(*args, "train.mixed_precision=bf16", "train.export=true", "optim.learning_rate=1e-2")
    student = load_run_models(cfg).student
    dtypes = {("lora_" in n, p.dtype) for n, p in student.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    result = train(cfg)
    assert result.status == "finished" and result.nonfinite_total == 0
    from diffusers import UNet2DConditionModel

    merged = UNet2DConditionModel.from_pretrained(result.output_dir / "student", subfolder="unet")
    assert {p.dtype for p in merged.parameters()} == {torch.float32}


def test_omega_conditioned_lora_trains_adapters_and_an_omega_input(make_cfg, teacher_dirs):
    """model.lora.omega_conditioned: adapters + trained cond_proj; the teacher is the base (adapters off, no omega);
    student/ loads in stock LatentConsistencyModelPipeline and base + lora/ via export.load_omega_lora matches it."""
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    from lcm_distill.engine import load_run_models
    from lcm_distill.export import load_omega_lora

    cfg = make_cfg("model.lora.enabled=true", "model.lora.omega_conditioned=true", "model.lora.rank=4",
                   "model.lora.alpha=8", "train.ema_decay=0", "train.export=true", "optim.learning_rate=1e-2",
                   "model.cond_proj_init=random")  # fmt: skip
    assert cfg.objective.omega_fixed is None  # auto: the omega range, the student can be told omega
    models = load_run_models(cfg)
    assert models.omega_dim == 32
    trainable = {n.split(".")[0] + ("/lora" if "lora_" in n else "/cond_proj")
                 for n, p in models.student.named_parameters() if p.requires_grad}  # fmt: skip
    assert "time_embedding/cond_proj" in trainable and all(t.endswith(("/lora", "/cond_proj")) for t in trainable)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    plain = UNet2DConditionModel.from_pretrained(teacher_dirs["epsilon"], subfolder="unet")
    with torch.no_grad(), models.teacher_unet() as teacher:
        torch.testing.assert_close(teacher(x, t, encoder_hidden_states=ctx).sample,
                                   plain(x, t, encoder_hidden_states=ctx).sample, atol=1e-5, rtol=0)  # fmt: skip
    out = train(cfg).output_dir
    merged = DiffusionPipeline.from_pretrained(out / "student")
    assert type(merged).__name__ == "LatentConsistencyModelPipeline"
    ours = load_omega_lora(teacher_dirs["epsilon"], out / "lora")
    ours.set_progress_bar_config(disable=True)
    merged.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, height=16, width=16, output_type="np")
    a = merged("a red square", guidance_scale=4.0, generator=torch.Generator().manual_seed(0), **kw).images
    b = ours("a red square", guidance_scale=4.0, generator=torch.Generator().manual_seed(0), **kw).images
    c = ours("a red square", guidance_scale=12.0, generator=torch.Generator().manual_seed(0), **kw).images
    assert abs(a - b).max() < 1e-4 and abs(b - c).max() > 1e-4  # one file, guidance still acts
    assert "load_omega_lora" in (out / "lora" / "README.md").read_text()
