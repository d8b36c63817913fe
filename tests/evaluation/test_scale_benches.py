"""The scale benchmarks on the tiny kit: gpu_check.sh end to end on CPU, the reference launcher's wrappers, the
rehearsal's overrides against every shipped recipe, and the activation measurement."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def load(name: str):
    """benchmarks/<name>.py as ``benchmarks.<name>`` (tests/conftest.py puts the checkout on sys.path); a plain
    function, not conftest's load_benchmark fixture, because a parametrize list below needs it at collection."""
    return importlib.import_module(f"benchmarks.{name}")


def test_gpu_check_runs_on_cpu_with_the_tiny_kit(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    env.pop("REFERENCE_SCRIPT", None)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--tiny"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for part in ("1/4 LCD step", "2/4 vs the reference script: skipped", "3/4 pipeline latency", "4/4 one bf16 step"):
        assert part in out
    assert "| baseline | none |" in out and "| cache+fused_ema+fused_adam+channels_last |" in out
    assert "| LCM 1 step |" in out and "| teacher DDIM 2 steps, CFG 7.5 |" in out
    assert "768 v-prediction bf16 step: loss" in out and "-> finite" in out
    rows = {r["row"]: r for r in json.loads((tmp_path / "out" / "train_step.json").read_text())["results"]}
    assert rows["baseline"]["loss"] > 0 and "| cache+fused_ema+fused_adam+fsdp2 |" in out and "| zero2 |" in out
    # one-process ZeRO-2 (fp32 here) runs the same step as the baseline: the same loss after the same steps
    assert abs(rows["zero2"]["loss"] - rows["baseline"]["loss"]) < 1e-5, (rows["zero2"], rows["baseline"])
    # part 5, SDXL (the tiny SDXL kit here): the LoRA step and the latency table of the SDXL pipelines
    assert "5/5 SDXL" in out and "preset tiny_sdxl" in out and "| LCM 4 steps |" in out
    sdxl = {r["row"]: r for r in json.loads((tmp_path / "out" / "sdxl_step.json").read_text())["results"]}
    assert set(sdxl) == {"baseline", "lora"} and all(r["loss"] > 0 for r in sdxl.values()), sdxl


FAKE_REFERENCE = """
import sys, torch
def group_by_keys_nothrow(data, *a, **k):
    for s in data:
        yield s["fname"]  # KeyError on an end-of-shard marker, like the real one
def parse_args():
    return sys.argv[1:]
def main(args):
    with torch.autocast("cpu"):  # the reference's teacher autocast: no dtype
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # an explicit dtype is left alone
        z = torch.ones(2, 2) @ torch.ones(2, 2)
    names = list(group_by_keys_nothrow([{"fname": "a.jpg"}, {"__url__": "shard-0.tar"}, {"fname": "b.jpg"}]))
    print("RESULT", y.dtype, z.dtype, names, args)
"""


def test_reference_launcher_wraps_without_editing_the_script(tmp_path):
    vs = load("vs_reference")
    script = tmp_path / "train_lcm_distill_sd_wds.py"
    script.write_text(FAKE_REFERENCE)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(vs.LAUNCHER)
    proc = subprocess.run([sys.executable, str(launcher), str(script), "--x", "1"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    assert line == "RESULT torch.float32 torch.bfloat16 ['a.jpg', 'b.jpg'] ['--x', '1']"
    assert "import" in script.read_text() and script.read_text() == FAKE_REFERENCE  # untouched


def test_vs_reference_argv_match_and_table_math(tmp_path):
    from lcm_distill.cli.train import parse_run

    vs = load("vs_reference")
    argv = vs.ours_argv(
        Path("/t"),
        "/s/{00000..00003}.tar",
        64,
        10,
        tmp_path / "run",
        vs.variant_sets("ours+cache+channels_last", Path("/c")),
    )
    assert "data.cache_dir=/c" in argv and "model.channels_last=true" in argv
    with pytest.raises(ValueError, match="--ours"):
        vs.variant_sets("ours+turbo", None)
    _, cfg = parse_run(argv[argv.index("--config") :], "lcd", "train_lcd.py")
    assert cfg.data.cache_dir == "/c" and cfg.model.channels_last
    o, t = cfg.objective, cfg.train
    assert (t.per_device_batch_size, t.max_train_steps, t.ema_decay, t.mixed_precision) == (vs.BATCH, 10, 0.95, "no")
    assert (o.loss, o.huber_c, o.omega_range, o.num_points, cfg.data.source) == ("huber", 0.001, (5.0, 15.0), 50,
                                                                                 "webdataset")  # fmt: skip
    args = type("A", (), {"out": tmp_path, "reference_script": Path("/ref.py"), "precision": "fp32"})()
    ref = vs.reference_argv(args, Path("/t"), "/s", 64, 10, tmp_path / "r")
    flag = lambda name: ref[ref.index(name) + 1]  # noqa: E731
    assert (flag("--train_batch_size"), flag("--huber_c"), flag("--ema_decay"), flag("--w_min"), flag("--w_max"),
            flag("--mixed_precision"), flag("--dataloader_num_workers")) == (
        str(vs.BATCH), "0.001", "0.95", "5", "15", "no", "1")  # fmt: skip
    result = {"config": "tiny", "channels": [32, 64], "resolution": 64, "precision": "fp32", "cache_s_per_sample": 0.5,
              "rows": {"reference": {"s_per_step": [0.3, 0.2], "peak_rss_gib": 1.0, "cuda_peak_gib": 10.0},
                       "ours": {"s_per_step": [0.2, 0.1], "peak_rss_gib": 1.0, "cuda_peak_gib": 6.0},
                       "ours+cache": {"s_per_step": [0.1, 0.1], "peak_rss_gib": 1.0,
                                      "cuda_peak_gib": 5.0}}}  # fmt: skip
    text = vs.table([result])
    assert "| ours | 0.200, 0.100 | 53.3 | 1.50x, 2.00x | 1.00 | 6.00 (0.60x) |" in text
    # the cache saves 0.05 s/step = 1.6 s per 256-sample epoch; it cost 0.5 s/sample = 128 s: 80 epochs
    assert "pays for itself after 80.0 epochs" in text


@pytest.mark.parametrize("recipe", load("scale_rehearsal").RECIPES)
def test_rehearsal_overrides_are_valid_for_every_shipped_recipe(recipe, tmp_path):
    from lcm_distill.cli.train import parse_run

    reh = load("scale_rehearsal")
    kind = "lcf" if recipe.startswith("lcf") else "lcd"
    source = "model.teacher=/t" if kind == "lcd" else "model.student=/s"
    extra = [o for o, _ in reh.RECIPES[recipe].get("extra", [])]  # a planner-check row's one switch
    sets = [source, "data.dataset=/d", *reh.COMMON, *(o for o, _ in reh.NEEDED.get(recipe, [])), *extra,
            f"train.output_dir={tmp_path}"]  # fmt: skip
    config = str(reh.config_of(recipe))
    _, cfg = parse_run(["--config", config, "--set", *sets], kind, recipe)
    assert (cfg.train.per_device_batch_size, cfg.train.max_train_steps) == (1, 2)
    shipped = parse_run(["--config", config, *(["--set", *extra] if extra else [])], kind, recipe)[1]
    # the method is the recipe's: everything that decides the objective and the networks is untouched
    assert cfg.objective == shipped.objective and cfg.optim == shipped.optim
    assert (cfg.model.lora, cfg.model.frozen_dtype, cfg.train.mixed_precision, cfg.train.ema_decay) == (
        shipped.model.lora,
        shipped.model.frozen_dtype,
        shipped.train.mixed_precision,
        shipped.train.ema_decay,
    )


def test_rehearsal_keeps_only_what_a_later_recipe_starts_from(tmp_path):
    reh = load("scale_rehearsal")
    for recipe, kept in (("lcd_sd21_base_512", {"target"}), ("lcd_sd21_base_lora", {"student"}),
                         ("lcd_sd21_768", set()), ("lcf_pokemon", set())):  # fmt: skip
        run = tmp_path / recipe
        for name in ("checkpoints", "student", "target", "lora"):
            (run / name).mkdir(parents=True)
        reh.free_disk(run, recipe)
        assert {p.name for p in run.iterdir()} == kept
    row = {"recipe": "lcd_sd21_base_512", "needed": [("optim.use_8bit_adam=true", "RAM")], "exit": 0,
           "losses": [0.5, float("nan")], "finite": False, "s_per_step": 40.0, "peak_rss_gib": 20.3,
           "sets": ["data.dataset=/d", "model.teacher=stabilityai/stable-diffusion-2-1-base"],
           "reload": "x"}  # fmt: skip
    text = reh.table([row])
    assert "NON-FINITE" in text and "`optim.use_8bit_adam=true` (RAM)" in text and "| 40.0 | 20.3 | - |" in text


def test_activation_worker_measures_a_tiny_unet():
    from lcm_distill.engine.memory import architecture_key
    from lcm_distill.testing import tiny_unet

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    got = []
    for kind in ("train", "nograd"):
        proc = subprocess.run([sys.executable, "benchmarks/measure_activations.py", "--worker", "tiny", kind, "fp32",
                               "16"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        got.append(json.loads(proc.stdout.strip().splitlines()[-1])["bytes"])
    assert got[0] > got[1] >= 0  # a backward holds more than a no-grad forward
    assert architecture_key(dict(tiny_unet().config)).startswith("unet/c32-64/l1/")


def test_run_measured_reports_exit_code_wall_rss_and_log(tmp_path):
    """harness.run_measured (vs_reference's and scale_rehearsal's child runner): the command line heads the log,
    a failing child's exit code comes back, and a child holding ~200 MB shows it in peak RSS and in the samples."""
    vs = load("vs_reference")  # puts the checkout on sys.path, as the benchmark scripts do
    from benchmarks.harness import run_measured

    samples: list = []
    hold = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.6); print('ok')"
    rc, wall, rss = run_measured([sys.executable, "-c", hold], tmp_path / "logs" / "ok.log", samples)
    log = (tmp_path / "logs" / "ok.log").read_text()
    assert rc == 0 and log.startswith("$ ") and log.rstrip().endswith("ok") and wall >= 0.6
    assert rss > 0.19 and samples and max(s[1] for s in samples) > 0.19
    rc, _, _ = run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "bad.log")
    assert rc == 3
    with pytest.raises(RuntimeError, match=r"bad2\.log"):
        vs.run([sys.executable, "-c", "raise SystemExit(1)"], tmp_path / "bad2.log")
