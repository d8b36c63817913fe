"""benchmarks/train_step.py runs (tiny preset, one step) and its SD-2.1 preset has SD 2.1's shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_step_bench", ROOT / "benchmarks" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sd21_preset_has_the_sd21_shapes(bench, tmp_path):
    with torch.device("meta"):  # shapes only: no 1.3B random weights on a CPU test machine
        comps = bench.sd21_components(tmp_path, 512)
    counts = {k: sum(p.numel() for p in comps[k].parameters()) for k in ("unet", "vae", "text_encoder")}
    assert counts == {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}  # SD 2.1-base's
    assert comps["unet"].config.cross_attention_dim == comps["text_encoder"].config.hidden_size == 1024
    assert len(comps["tokenizer"]) == 49408


def test_rows_turn_on_exactly_their_switches(bench):
    base = bench.row_overrides("baseline", "/c", "inductor")
    assert "model.frozen_dtype=fp32" in base and not any(o.startswith("data.cache_dir") for o in base)
    assert bench.row_overrides("cache", "/c", "inductor")[-1] == "data.cache_dir=/c"
    effective = dict(o.split("=", 1) for o in bench.row_overrides("all", "/c", "aot_eager"))  # later ones win
    assert effective == {"data.cache_dir": "/c", "model.frozen_dtype": "bf16", "train.ema_impl": "foreach",
                         "model.compile": "true", "model.compile_backend": "aot_eager"}  # fmt: skip
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
