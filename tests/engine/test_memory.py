"""The memory planner's arithmetic (lcm_distill.engine.memory) and its --dry-run output."""

from __future__ import annotations

import pytest

from lcm_distill.config import load_config
from lcm_distill.engine.memory import GIB, Sizes, activation_bytes, count_parameters, estimate, lora_parameters

P = 1_000_000_000  # a round UNet so every line is checkable by hand
SIZES = Sizes(unet=P, vae=100_000_000, text_encoder=300_000_000, lora=10_000_000, arch="arch")
TABLE = {"arch": {
    "bf16/train": {"64": 1 * GIB, "256": 4 * GIB},  # 1 GiB/sample at 8x8 latents, 4 at 16x16: linear in pixels
    "bf16/train_ckpt": {"64": 0.25 * GIB, "256": 1 * GIB},
    "bf16/lora": {"64": 0.5 * GIB, "256": 2 * GIB},
    "bf16/nograd": {"64": 0.1 * GIB, "256": 0.4 * GIB},
}}  # fmt: skip


def lines(plan) -> dict[str, float]:
    return {what: round(gib * GIB) for what, gib, _ in plan.lines}


def cfg_of(*sets: str):
    base = ["model.teacher=unused", "data.resolution=128", "train.per_device_batch_size=2",
            "train.mixed_precision=bf16", "model.frozen_dtype=bf16", "train.ema_decay=0.95",
            "data.dataset=unused"]  # fmt: skip
    return load_config(None, [*base, *sets])


def test_full_lcd_counts_student_grads_adam_target_teacher_encoders_and_activations():
    got = lines(estimate(cfg_of(), sizes=SIZES, table=TABLE))
    assert got == {
        "student UNet": 4 * P, "gradients": 4 * P, "optimiser states": 8 * P, "EMA target": 4 * P,
        "teacher UNet (frozen)": 2 * P, "VAE + text encoder (frozen)": 2 * 400_000_000,
        # 128 px -> 16x16 latents. The student holds 4 GiB/sample x batch 2 while the teacher runs on cond + uncond
        # (twice the batch, 0.4 GiB/sample): that phase, 8 + 1.6 GiB, is the peak
        "activations (peak phase)": round((2 * 4 + 2 * 2 * 0.4) * GIB),
    }  # fmt: skip


def test_switches_change_exactly_their_lines():
    base = lines(estimate(cfg_of(), sizes=SIZES, table=TABLE))
    adam8 = lines(estimate(cfg_of("optim.use_8bit_adam=true"), sizes=SIZES, table=TABLE))
    assert adam8["optimiser states"] == 2 * P and {k: v for k, v in adam8.items() if k != "optimiser states"} == {
        k: v for k, v in base.items() if k != "optimiser states"}  # fmt: skip
    fp32 = lines(estimate(cfg_of("model.frozen_dtype=fp32"), sizes=SIZES, table=TABLE))
    assert fp32["teacher UNet (frozen)"] == 4 * P and fp32["VAE + text encoder (frozen)"] == 4 * 400_000_000
    ckpt = lines(estimate(cfg_of("model.gradient_checkpointing=true"), sizes=SIZES, table=TABLE))
    assert ckpt["activations (peak phase)"] == round((2 * 1 + 1.6) * GIB)
    # with checkpointing, the fixed part of a pass (autocast's weight copies) is not held during the teacher's pass
    fixed = {"arch": {**TABLE["arch"], "bf16/train_ckpt": {"64": 2 * GIB, "256": 2.75 * GIB}}}  # 1.75 fixed + 1/sample
    ckpt = lines(estimate(cfg_of("model.gradient_checkpointing=true"), sizes=SIZES, table=fixed))
    assert ckpt["activations (peak phase)"] == round(max(1.75 + 2 * 1, 2 * 1 + 1.6) * GIB)  # the student's pass
    no_ckpt = {"arch": {**TABLE["arch"], "bf16/train": fixed["arch"]["bf16/train_ckpt"]}}
    held = lines(estimate(cfg_of(), sizes=SIZES, table=no_ckpt))["activations (peak phase)"]
    assert held == round((1.75 + 2 * 1 + 1.6) * GIB)  # without checkpointing it stays for backward
    no_ema = lines(estimate(cfg_of("train.ema_decay=0"), sizes=SIZES, table=TABLE))
    assert "EMA target" not in no_ema
    full_precision = estimate(cfg_of("train.mixed_precision=no"), sizes=SIZES, table=TABLE)
    assert not full_precision.activations_known  # fp32 activations not in this table: said, not guessed


def test_lcf_has_no_teacher_and_its_target_forward_is_one_batch():
    got = lines(estimate(cfg_of("objective.kind=lcf"), sizes=SIZES, table=TABLE))
    assert "teacher UNet (frozen)" not in got
    assert got["activations (peak phase)"] == round((2 * 4 + 2 * 0.4) * GIB)  # target forward on the batch alone


def test_lora_trains_adapters_only_on_a_frozen_base():
    got = lines(estimate(cfg_of("model.lora.enabled=true", "train.ema_decay=0"), sizes=SIZES, table=TABLE))
    assert got["student: base UNet (frozen)"] == 2 * P and got["student: LoRA adapters"] == 4 * 10_000_000
    assert got["gradients"] == 4 * 10_000_000 and got["optimiser states"] == 8 * 10_000_000
    assert "teacher UNet (frozen)" not in got and "EMA target" not in got  # the teacher is the base, adapters off
    assert got["activations (peak phase)"] == round((2 * 2 + 1.6) * GIB)  # the measured LoRA row, not the full one


def test_ddp_adds_a_gradient_copy_and_zero2_shards_gradients_and_states():
    ddp = lines(estimate(cfg_of(), processes=8, sizes=SIZES, table=TABLE))
    assert ddp["DDP gradient buckets"] == 4 * P and ddp["gradients"] == 4 * P
    z2 = lines(estimate(cfg_of(), processes=8, zero2=True, sizes=SIZES, table=TABLE))
    assert "DDP gradient buckets" not in z2
    assert z2["gradients"] == 4 * P // 8 and z2["optimiser states"] == 8 * P // 8
    # DeepSpeed's bf16 engine: a bf16 compute copy on every rank, fp32 masters partitioned; the EMA target replicated
    assert z2["student UNet"] == 2 * P and z2["fp32 master weights"] == 4 * P // 8 and z2["EMA target"] == 4 * P
    z2_fp32 = lines(estimate(cfg_of("train.mixed_precision=no"), processes=8, engine="zero2", sizes=SIZES, table=TABLE))
    assert z2_fp32["student UNet"] == 4 * P and "fp32 master weights" not in z2_fp32


def test_fsdp2_shards_weights_gradients_states_and_the_target():
    f = lines(estimate(cfg_of(), processes=8, engine="fsdp2", sizes=SIZES, table=TABLE))
    assert f["student UNet"] == 4 * P // 8 and f["gradients"] == 4 * P // 8 and f["optimiser states"] == P
    assert f["EMA target"] == 4 * P // 8 and f["FSDP2 gathered blocks"] == round(0.8 * P)
    assert "DDP gradient buckets" not in f and f["teacher UNet (frozen)"] == 2 * P  # frozen nets stay whole


def test_activations_interpolate_linearly_in_latent_pixels_and_unknown_is_none():
    assert activation_bytes("arch", "bf16/train", 160, table=TABLE) == pytest.approx(2.5 * GIB)
    assert activation_bytes("arch", "bf16/train", 1024, table=TABLE) == pytest.approx(16 * GIB)  # 64x64 latents
    assert activation_bytes("other", "bf16/train", 64, table=TABLE) is None
    # a part that does not grow with the pixels (autocast's weight copies) does not grow with the batch either
    fixed = {"a": {"bf16/train": {"64": 2 * GIB, "256": 5 * GIB}}}  # 1 GiB fixed + 1/64 GiB per latent pixel
    assert activation_bytes("a", "bf16/train", 256, 4, table=fixed) == pytest.approx((1 + 4 * 4) * GIB)


def test_fit_verdict_and_suggestions_apply_until_it_fits():
    plan = estimate(cfg_of(), device_gib=24, sizes=SIZES, table=TABLE)
    total = plan.total_gib
    assert plan.fits is False and total > 22.5
    changes = [c for c, _ in plan.suggestions]
    assert changes[0] == "model.gradient_checkpointing=true" and changes[1] == "optim.use_8bit_adam=true"
    totals = [t for _, t in plan.suggestions]
    assert totals[-1] <= 24 - 1.5 and totals == sorted(totals, reverse=True)  # each switch saves, the last fits
    text = plan.render()
    assert "does NOT fit on a 24 GiB device" in text and "to fit: optim.use_8bit_adam=true" in text
    assert estimate(cfg_of(), device_gib=80, sizes=SIZES, table=TABLE).fits is True


def test_sd21_counts_from_config_files_without_weights(tmp_path):
    """The recipe's hub id is offline here: the planner falls back to the SD 2.1 configs of the test kit."""
    cfg = load_config("configs/lcd_sd21_base_512.yaml")
    s = count_parameters(cfg)
    assert s.unet == 865_910_724 + 256 * 320  # + the student's omega input (cond_proj: 256 -> 320, no bias)
    assert (s.vae, s.text_encoder, s.lora) == (83_653_863, 340_387_840, 0)
    lora = count_parameters(load_config("configs/lcd_sd21_base_lora.yaml"))
    assert lora.unet == 865_910_724  # plain LoRA: no omega input
    assert lora.lora > 0


def test_sd15_recipe_is_planned_offline_from_the_known_configs():
    """configs/lcd_sd15_512.yaml's hub teacher is not cached here: the plan counts SD 1.5's true networks (the
    smaller CLIP ViT-L text encoder, 768-d cross-attention) and comes out below 2.1-base's."""
    from lcm_distill.known_configs import SD15_PARAMS

    cfg = load_config("configs/lcd_sd15_512.yaml")
    s = count_parameters(cfg)
    assert s.unet == SD15_PARAMS["unet"] + 256 * 320 and (s.vae, s.text_encoder) == (83_653_863, 123_060_480)
    plan, base = estimate(cfg, device_gib=80), estimate(load_config("configs/lcd_sd21_base_512.yaml"), device_gib=80)

    def weights_and_states(p):
        return sum(gib for what, gib, _ in p.lines if not what.startswith("activations"))

    assert 17.5 < weights_and_states(plan) < weights_and_states(base)
    assert "activations of this UNet were never measured" in plan.render()  # said, not guessed from SD 2.1's


def test_lora_parameter_count_matches_peft(tmp_path):
    from peft import LoraConfig

    from lcm_distill.config import DEFAULT_LORA_TARGETS
    from lcm_distill.testing import tiny_unet

    unet = tiny_unet()
    predicted = lora_parameters(unet, 4, list(DEFAULT_LORA_TARGETS))
    before = sum(p.numel() for p in unet.parameters())
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(DEFAULT_LORA_TARGETS)))
    assert sum(p.numel() for p in unet.parameters()) - before == predicted > 0


def test_dry_run_prints_the_plan_even_when_a_data_check_fails(capsys):
    from lcm_distill.cli.train import main

    rc = main(["--config", "configs/lcd_sd21_base_512.yaml", "--dry-run", "--gpu-gb", "16"], kind="lcd")
    out = capsys.readouterr()
    assert rc == 2 and "model.teacher" in out.err  # the recipe's hub teacher is not on this offline machine
    assert "# memory plan per process (1 process)" in out.out and "does NOT fit on a 16 GiB device" in out.out
    rc = main(["--config", "configs/lcd_sd21_base_512.yaml", "--dry-run", "--num-processes", "0"], kind="lcd")
    assert rc == 2 and "--num-processes=0" in capsys.readouterr().err


def test_sdxl_recipes_are_planned_offline_from_the_known_configs():
    """SDXL base at its true shapes (meta device): the Hub's parameter counts, both text encoders counted, the
    family read from the configs; the full recipe's weights and states per GPU over 8 GPUs fall DDP > ZeRO-2 >
    FSDP2, and the LoRA's adapters are the size of lcm-lora-sdxl's (~197 M at rank 64)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lcm_distill.families import family_of
    from lcm_distill.known_configs import SDXL, SDXL_PARAMS, known_network_config

    hub = SDXL["hub_id"]
    with torch.device("meta"):
        nets = {"unet": UNet2DConditionModel(**known_network_config(hub, "unet")),
                "vae": AutoencoderKL(**known_network_config(hub, "vae")),
                "text_encoder": CLIPTextModel(CLIPTextConfig(**known_network_config(hub, "text_encoder"))),
                "text_encoder_2": CLIPTextModelWithProjection(
                    CLIPTextConfig(**known_network_config(hub, "text_encoder_2")))}  # fmt: skip
    assert {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()} == SDXL_PARAMS
    assert family_of(known_network_config(hub, "unet")).name == "sdxl"
    cfg = load_config("configs/lcd_sdxl_1024.yaml")
    s = count_parameters(cfg)
    assert s.unet == SDXL_PARAMS["unet"] + 256 * 320  # + the omega input (cond_proj: 256 -> 320, no bias)
    assert s.text_encoder == SDXL_PARAMS["text_encoder"] + SDXL_PARAMS["text_encoder_2"] and "/t1-2-10" in s.arch

    def weights_and_states(engine):
        plan = estimate(cfg, processes=8, device_gib=80, engine=engine, suggest=False)
        return sum(gib for what, gib, _ in plan.lines if not what.startswith("activations"))

    ddp, zero2, fsdp2 = (weights_and_states(e) for e in ("ddp", "zero2", "fsdp2"))
    assert 60 < ddp < 66 and 24 < zero2 < 27 and 13 < fsdp2 < 16  # the numbers the recipe's comment quotes
    lora = count_parameters(load_config("configs/lcd_sdxl_lora.yaml"))
    assert lora.unet == SDXL_PARAMS["unet"] and 196e6 < lora.lora < 198e6


def test_the_true_shape_sdxl_kit_builds_the_hub_networks(tmp_path):
    """lcm_distill/testing/sdxl.py (benchmarks/scale_rehearsal.py's SDXL teacher) at no cost on the meta device:
    its networks have the Hub's parameter counts (asserted inside), the family reads as SDXL, and the tokenizers
    pad as SDXL's do (end token for CLIP ViT-L, "!" for bigG)."""
    import torch

    from lcm_distill.families import family_of
    from lcm_distill.testing.sdxl import sdxl_components

    with torch.device("meta"):
        comps = sdxl_components(tmp_path)
    assert family_of(dict(comps["unet"].config)).name == "sdxl"
    assert comps["tokenizer"].pad_token == "<|endoftext|>" and comps["tokenizer_2"].pad_token == "!"
    assert comps["scheduler"].config.prediction_type == "epsilon"
