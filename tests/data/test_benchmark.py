"""benchmarks/train_step.py runs (tiny preset, one step) and its SD-2.1 preset has SD 2.1's shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("train_step")


@pytest.mark.parametrize("variant", ["sd21-base", "sd21"])
def test_sd21_presets_have_the_sd21_shapes(tmp_path, variant):
    from lcm_distill.testing.sd21 import SD21_VARIANTS, parameter_counts, sd21_components

    with torch.device("meta"):  # shapes only: no 1.3B random weights on a CPU test machine
        comps = sd21_components(variant, tmp_path)
    assert parameter_counts(comps) == {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}
    unet = comps["unet"].config
    assert unet.cross_attention_dim == comps["text_encoder"].config.hidden_size == 1024
    assert comps["text_encoder"].config.num_hidden_layers == 23  # SD 2.x drops OpenCLIP-H's last layer
    assert unet.use_linear_projection and unet.sample_size * 8 == SD21_VARIANTS[variant]["resolution"]
    assert unet.upcast_attention == (variant == "sd21")  # the 768 v-model upcasts attention, 2.1-base does not
    assert comps["scheduler"].config.prediction_type == ("v_prediction" if variant == "sd21" else "epsilon")
    tok = comps["tokenizer"]
    assert len(tok) == 49408 and tok.pad_token == "!" and tok.pad_token_id == 0  # OpenCLIP pads with id 0


def test_unet_flops_are_counted_and_scale_with_latent_pixels(bench):
    from lcm_distill.testing.sd21 import sd21_unet_config

    f64 = bench.unet_forward_flops(sd21_unet_config("sd21-base"), 64, 256)
    f32 = bench.unet_forward_flops(sd21_unet_config("sd21-base"), 32, 256)
    assert 3e11 < f64 < 2e12  # SD 2.1's UNet at 64x64 latents: ~0.8 TFLOP per forward
    assert 3.5 < f64 / f32 < 6  # ~4x the pixels, attention a bit more than linear
    assert bench.peak_tflops("NVIDIA H200", None) == bench.peak_tflops("NVIDIA H100 80GB HBM3", None) == 989.4
    assert bench.peak_tflops("cpu", None) is None and bench.peak_tflops("cpu", 100.0) == 100.0


def test_rows_turn_on_exactly_their_switches(bench):
    base = bench.row_overrides("baseline", "/c", "inductor")
    assert "model.frozen_dtype=fp32" in base and not any(o.startswith("data.cache_dir") for o in base)
    assert bench.row_overrides("cache", "/c", "inductor")[-1] == "data.cache_dir=/c"
    effective = dict(o.split("=", 1) for o in bench.row_overrides("all", "/c", "aot_eager"))  # later ones win
    assert effective == {"data.cache_dir": "/c", "model.frozen_dtype": "bf16", "train.ema_impl": "foreach",
                         "model.compile": "true", "model.compile_backend": "aot_eager",
                         "optim.use_8bit_adam": "false", "model.channels_last": "false",
                         "optim.adamw_impl": "fused"}  # fmt: skip
    lora = dict(o.split("=", 1) for o in bench.row_overrides("lora+frozen_bf16", "/c", "inductor"))
    assert lora["model.lora.enabled"] == "true" and lora["model.frozen_dtype"] == "bf16"  # LoRA is not in "all"


def test_tiny_preset_measures_a_step(bench, tmp_path):
    assets = bench.build_assets("tiny", tmp_path, 16, 2)
    overrides = [o for o in bench.row_overrides("all", assets["cache"], "eager") if not o.startswith("model.compile")]
    result = bench.run_worker({"row": "all", "config": assets["config"], "overrides": overrides, "steps": 2,
                               "warmup": 1})  # fmt: skip
    assert result["samples_s"] > 0 and result["peak_gib"] > 0 and result["device"] == "cpu"
    text = bench.table([{**result, "row": "baseline"}, result, {"row": "compile", "error": "boom"}])
    assert "| baseline | none |" in text and "1.00x" in text and "failed: boom" in text
    assert result["unet_tflops_s"] > 0 and result["loss"] == result["loss"]  # finite
    assert "50.0%" in bench.table([{**result, "unet_tflops_s": 5.0}], peak=10.0)  # MFU column
