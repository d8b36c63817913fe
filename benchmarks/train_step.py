#!/usr/bin/env python
"""Throughput and peak memory of one LCD training step, with each fast-path switch on and off (a benchmark, not a
test: numbers depend on the machine; the loss equality of every switch is tested in tests/data/test_switches.py).

    python benchmarks/train_step.py --preset tiny                 # the offline test kit, CPU, seconds
    python benchmarks/train_step.py --preset sd21 --batch-size 8  # SD-2.1-shaped nets, random weights, 512 px, GPU
    python benchmarks/train_step.py --preset sdxl --rows lora+frozen_bf16   # SDXL base shapes, 1024 px, GPU

Rows: "baseline" (VAE + text encoder every step, frozen nets fp32, per-tensor EMA loop, eager), one row per switch
turned on alone, and "all" (every switch on). The teacher's cond/uncond forward is always one batched call
(not a switch). Switches (config keys): cache = data.cache_dir (precomputed VAE posterior + text embeddings),
frozen_bf16 = model.frozen_dtype=bf16, fused_ema = train.ema_impl=foreach, fused_adam = optim.adamw_impl=fused,
compile = model.compile (torch.compile of student, target and teacher; the first step, which compiles, is reported
separately and excluded from the rate). Measured alone: adam8 (8-bit AdamW), channels_last, and the sharded
engines fsdp2 / zero2 (train.distributed, one process in a process group of 1). --profile N splits N
more steps into regions (encoders, the three UNets' forwards, backward, clipping, AdamW, EMA, other).

What a step is: the engine's own TrainStep (lcm_distill.engine.step) over the run's ConsistencyStep - encode or read
cache, student forward+backward, teacher solver step, target forward, gradient clipping, accumulation, AdamW with
the config's optim.* settings, LR schedule, EMA - on batches already in device memory (decoding images is a
data-loader cost, hidden by its workers).
samples/s = batch / median step time. Peak memory: max CUDA memory allocated (GPU), or the process's peak RSS (CPU,
which includes Python and the libraries). Each row runs in its own process, so peaks and compile caches don't mix.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill
from benchmarks.harness import ROOT

SWITCHES = {  # row name -> config overrides that turn the switch on
    "cache": ["data.cache_dir={cache}"],
    "frozen_bf16": ["model.frozen_dtype=bf16"],
    "fused_ema": ["train.ema_impl=foreach"],
    "compile": ["model.compile=true", "model.compile_backend={backend}"],
    "fused_adam": ["optim.adamw_impl=fused"],
}
SPEED_SWITCHES = list(SWITCHES)  # what "all" turns on
# Memory / layout switches, measured on their own (not in "all"): 8-bit AdamW (bitsandbytes), channels_last.
SWITCHES["adam8"] = ["optim.use_8bit_adam=true"]
SWITCHES["channels_last"] = ["model.channels_last=true"]
# Not a speed switch but a mode whose memory users ask about: LCM-LoRA (adapters only train; the base UNet is the
# teacher). Compare rows "lora" and "lora+frozen_bf16" (base weights fp32 vs model.frozen_dtype=bf16).
SWITCHES["lora"] = ["model.lora.enabled=true", "train.ema_decay=0"]
# Sharded engines in one process (a process group of 1): what a GPU pays for FSDP2's wrapping and DeepSpeed's bf16
# engine before any second rank helps. Not in "all"; each row gets torchrun's environment variables.
ENGINE_SWITCHES = {"fsdp2": ["train.distributed=fsdp2"], "zero2": ["train.distributed=zero2"]}
SWITCHES.update(ENGINE_SWITCHES)
OFF = [
    "model.frozen_dtype=fp32",
    "train.ema_impl=loop",
    "model.compile=false",
    "optim.use_8bit_adam=false",
    "model.channels_last=false",
    "optim.adamw_impl=loop",  # torch.optim.AdamW's choice on CPU (and the anchors')
]
ROWS = ["baseline", *SPEED_SWITCHES, "all"]

PRESETS = {  # sd21*: random-weight SD 2.1 networks at their true shapes (lcm_distill.testing.sd21)
    "tiny": {"resolution": 16, "batch_size": 8, "mixed_precision": "no", "checkpointing": False},
    "tiny_v": {"resolution": 16, "batch_size": 2, "mixed_precision": "bf16", "checkpointing": True},
    "sd21": {"resolution": 512, "batch_size": 8, "mixed_precision": "bf16", "checkpointing": True,
             "variant": "sd21-base"},
    "sd21_768": {"resolution": 768, "batch_size": 1, "mixed_precision": "bf16", "checkpointing": True,
                 "variant": "sd21"},
    # SDXL base at its true shapes (lcm_distill.testing.sdxl) and the tiny SDXL kit
    "sdxl": {"resolution": 1024, "batch_size": 2, "mixed_precision": "bf16", "checkpointing": True,
             "variant": "sdxl"},
    "tiny_sdxl": {"resolution": 16, "batch_size": 2, "mixed_precision": "no", "checkpointing": False,
                  "variant": "tiny_sdxl"},
}  # fmt: skip


def build_assets(preset: str, work: Path, resolution: int, batch_size: int) -> dict:
    """Teacher folder, a captioned image folder (2 batches), the run YAML, and its cache (built by the command)."""
    from lcm_distill.config import load_config
    from lcm_distill.testing import make_imagefolder, save_tiny_sd, save_tiny_sdxl
    from lcm_distill.testing.sd21 import save_sd21
    from lcm_distill.testing.sdxl import save_sdxl

    teacher = work / "teacher"
    p = PRESETS[preset]
    builders = {"sdxl": save_sdxl, "tiny_sdxl": save_tiny_sdxl}
    if "variant" not in p:
        save_tiny_sd(teacher, "v_prediction" if preset == "tiny_v" else "epsilon")
    else:
        builders.get(p["variant"], lambda folder: save_sd21(folder, p["variant"]))(teacher)
    images = make_imagefolder(work / "images", n=2 * batch_size, size=resolution)
    cfg = load_config(None, [
        f"model.teacher={teacher}", f"model.gradient_checkpointing={str(p['checkpointing']).lower()}",
        f"data.dataset={images}", f"data.resolution={resolution}", "data.center_crop=true", "data.random_flip=false",
        f"train.per_device_batch_size={batch_size}", f"train.mixed_precision='{p['mixed_precision']}'",
        "train.ema_decay=0.95", "train.report_to=none", "train.validation_prompts=[]", f"train.output_dir={work}/run",
        "model.omega_embed_dim=256" if "variant" in p and preset != "tiny_sdxl" else "model.omega_embed_dim=32",
    ])  # fmt: skip
    config = work / "run.yaml"
    config.write_text(cfg.to_yaml())
    cache = work / "cache"
    command = [sys.executable, "-m", "lcm_distill.cli.cache", "--config", str(config), "--out", str(cache),
               "--batch-size", str(batch_size), "--overwrite"]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, stdout=sys.stderr)  # the table alone on stdout
    return {"config": str(config), "cache": str(cache)}


def switches_of(row: str) -> list[str]:
    """'baseline' -> none, 'all' -> every switch, 'cache+fused_ema' -> those two."""
    return list(SPEED_SWITCHES) if row == "all" else [] if row == "baseline" else row.split("+")


def row_overrides(row: str, cache: str, backend: str) -> list[str]:
    on = switches_of(row)
    out = list(OFF)
    for name in on:
        out += [o.format(cache=cache, backend=backend) for o in SWITCHES[name]]
    return out


def unet_forward_flops(unet_config: dict, latent_hw: int, omega_dim: int | None) -> float:
    """FLOPs of one UNet forward on one sample, counted on the meta device (torch.utils.flop_counter)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({**unet_config, "time_cond_proj_dim": omega_dim})
        x = torch.empty(1, unet_config["in_channels"], latent_hw, latent_hw)
        ctx = torch.empty(1, 77, unet_config["cross_attention_dim"])
        cond = torch.empty(1, omega_dim) if omega_dim else None
        added = {}
        if unet_config.get("addition_embed_type") == "text_time":  # SDXL: pooled embedding + six time ids
            pooled = unet_config["projection_class_embeddings_input_dim"] - 6 * unet_config["addition_time_embed_dim"]
            added = {"added_cond_kwargs": {"text_embeds": torch.empty(1, pooled), "time_ids": torch.empty(1, 6)}}
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.tensor([500]), encoder_hidden_states=ctx, timestep_cond=cond, **added)
    return float(counter.get_total_flops())


# UNet passes per sample and step, in forward-equivalents (a backward costs two): student forward + backward (3),
# the teacher's cond and uncond (2, LCD only), the target (1). Recomputation under checkpointing is not counted
# (model FLOPs utilisation, not hardware FLOPs).
def unet_passes(cfg) -> int:
    """UNet forward-equivalents per sample per step: the student's forward + backward (3), the target's forward (1)
    and, with a teacher, one batched [cond; uncond] call (2) per solver evaluation (the solver's order)."""
    from lcm_distill.functional import SOLVERS
    from lcm_distill.objective_kinds import OBJECTIVE_KINDS

    teacher = 2 * SOLVERS[cfg.objective.solver].order if OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher else 0
    return 3 + 1 + teacher


PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense bf16 tensor-core peak (SXM)


REGIONS = ("vae_encode", "text_encoder", "student_fwd", "teacher_fwd", "target_fwd", "backward", "clip",
           "Optimizer.step", "ema", "Optimizer.zero_grad")  # fmt: skip


def profile_regions(models, parallel, run_steps, steps: int) -> dict[str, float]:
    """ms per step of each region of the step (torch.profiler, CPU clock), and "other": what no region covers
    (Python, schedule gathers, the omega embedding, noise slicing, accelerate's wrappers, logging reductions)."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    acc = parallel.accelerator
    handles = []

    def region(module, name: str) -> None:
        box = {}

        def pre(*_):
            box["rf"] = record_function(name)
            box["rf"].__enter__()

        def post(*_):
            box.pop("rf").__exit__(None, None, None)

        handles.extend([module.register_forward_pre_hook(pre), module.register_forward_hook(post)])

    unwrapped = parallel.unwrap(models.student)
    for module, name in ((models.text_encoder, "text_encoder"), (unwrapped, "student_fwd"),
                         (models.teacher, "teacher_fwd"), (models.target, "target_fwd")):  # fmt: skip
        if module is not None:
            region(module, name)
    encode, backward = models.vae.encode, acc.backward

    def wrap(fn, name):
        def inner(*a, **k):
            with record_function(name):
                return fn(*a, **k)

        return inner

    models.vae.encode, acc.backward = wrap(encode, "vae_encode"), wrap(backward, "backward")
    parallel.clip, parallel.ema_update = wrap(parallel.clip, "clip"), wrap(parallel.ema_update, "ema")  # the engine's
    try:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof, record_function("step"):
            run_steps(steps)
    finally:
        for h in handles:
            h.remove()
        del models.vae.encode, parallel.clip, parallel.ema_update  # back to the class's methods
        acc.backward = backward
    totals = {e.key: e.cpu_time_total / 1e3 / steps for e in prof.key_averages()}
    out = {r: sum(v for k, v in totals.items() if k == r or k.startswith(r + "#")) for r in REGIONS}
    out["student_fwd"] = max(0.0, out["student_fwd"])  # the target forward is a separate module
    out["step"] = totals.get("step", 0.0)
    out["other"] = max(0.0, out["step"] - sum(out[r] for r in REGIONS))
    return out


def single_process_group() -> dict[str, str]:
    """torchrun's variables for one rank on a free local port: accelerate then forms a process group of 1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}  # fmt: skip


def run_worker(spec: dict) -> dict:
    """One row in this process: load, warm up, time ``steps`` steps."""
    import itertools

    from lcm_distill.config import load_config
    from lcm_distill.engine import set_up_run
    from lcm_distill.engine.engine_choice import resolve_engine
    from lcm_distill.engine.parallel import Parallel

    cfg = load_config(spec["config"], spec["overrides"])
    parallel = Parallel(resolve_engine(cfg))
    acc = parallel.build_accelerator(cfg)
    device, cuda = acc.device, acc.device.type == "cuda"
    run = set_up_run(cfg, parallel)  # the engine's own set-up (engine/setup.py): what a run trains with
    models, student, train_step, B = run.models, run.student, run.step, cfg.train.per_device_batch_size
    it = iter(run.batches)
    data = []
    for _ in range(2):
        batch = next(it)
        data.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
    batches = itertools.cycle(data)

    def step(i: int) -> float:
        result = train_step(i, batches)  # .item() of the loss inside: synchronises
        if not result.finite:
            raise RuntimeError(f"step {i}: non-finite loss")
        return result.loss

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step(0)
    first = time.perf_counter() - t0
    for i in range(1, spec["warmup"]):
        step(i)
    times = []
    for i in range(spec["warmup"], spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    profiled = None
    if spec.get("profile"):
        start = spec["warmup"] + spec["steps"] + 1

        def run_steps(n: int) -> None:
            for i in range(start, start + n):
                step(i)

        profiled = profile_regions(models, parallel, run_steps, spec["profile"])
    med = statistics.median(times)
    samples = B * cfg.train.gradient_accumulation_steps
    unet_cfg = dict(parallel.unwrap(student).config)
    flops = unet_forward_flops(unet_cfg, models.latent_shape(cfg.data.resolution)[1], models.omega_dim)
    tflops_s = unet_passes(cfg) * samples * flops / med / 1e12
    return {"row": spec["row"], "samples_s": samples / med, "step_s": med, "first_step_s": first,
            "peak_gib": peak / 2**30, "memory": "cuda max allocated" if cuda else "process peak RSS",
            "unet_gflop_per_sample": flops / 1e9, "unet_tflops_s": tflops_s,
            "loss": step(spec["warmup"] + spec["steps"]),
            "device": str(device), "gpu": torch.cuda.get_device_name() if cuda else None,
            "profile_ms": profiled}  # fmt: skip


def peak_tflops(gpu: str | None, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if gpu and k in gpu), None)


def table(results: list[dict], peak: float | None = None) -> str:
    """One row per result; MFU = the UNet passes' model FLOP/s over ``peak`` TFLOP/s (none: not printed)."""
    base = next((r for r in results if r["row"] == "baseline"), None)
    lines = ["| row | switches on | samples/s | s/step (median) | vs baseline | first step s | peak GiB | "
             "UNet TFLOP/s | MFU | loss |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        on = ", ".join(switches_of(r["row"])) or "none"
        if "error" in r:
            lines.append(f"| {r['row']} | {on} | failed: {r['error']} | | | | | | | |")
            continue
        speed = f"{r['samples_s'] / base['samples_s']:.2f}x" if base and "samples_s" in base else "-"
        mfu = f"{r['unet_tflops_s'] / peak:.1%}" if peak else "-"
        lines.append(f"| {r['row']} | {on} | {r['samples_s']:.1f} | {r['step_s']:.4f} | {speed} | "
                     f"{r['first_step_s']:.2f} | {r['peak_gib']:.2f} | {r['unet_tflops_s']:.3g} | {mfu} | "
                     f"{r['loss']:.4g} |")  # fmt: skip
    return "\n".join(lines)


def profile_table(results: list[dict]) -> str:
    """Rows: regions of the step; columns: benchmark rows; ms per step (profiler clock, which adds overhead)."""
    done = [r for r in results if r.get("profile_ms")]
    lines = ["| region (ms/step) | " + " | ".join(r["row"] for r in done) + " |",
             "|---|" + "---:|" * len(done)]  # fmt: skip
    for region in (*REGIONS, "other", "step"):
        cells = []
        for r in done:
            p = r["profile_ms"]
            cells.append(f"{p[region]:.1f} ({p[region] / p['step']:.0%})" if p["step"] else "-")
        lines.append(f"| {region} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="tiny")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per row")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one compiles)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {ROWS} or switches joined by +")
    ap.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in each row's process")
    ap.add_argument("--workdir", default=None, help="keep assets here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after timing, profile this many steps per row and print ms per region of the step")
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak for the MFU column (default: known for H100/H200, else none)",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    preset = PRESETS[args.preset]
    B, R = args.batch_size or preset["batch_size"], args.resolution or preset["resolution"]
    rows = [r for r in args.rows.split(",") if r]
    if unknown := sorted({s for r in rows for s in switches_of(r)} - set(SWITCHES)):
        ap.error(f"unknown switches {unknown}; rows are {ROWS} or switches joined by +")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lcd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    assets = build_assets(args.preset, work, R, B)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    results = []
    for row in rows:
        spec = {"row": row, "config": assets["config"], "steps": args.steps, "warmup": max(1, args.warmup),
                "profile": args.profile,
                "overrides": row_overrides(row, assets["cache"], args.compile_backend)}  # fmt: skip
        cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        row_env = {**env, **single_process_group()} if set(switches_of(row)) & set(ENGINE_SWITCHES) else env
        proc = subprocess.run(cmd, cwd=ROOT, env=row_env, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
            results.append({"row": row, "error": tail})
        else:
            results.append(json.loads(line[len("RESULT ") :]))
        print(f"{row}: {results[-1]}", file=sys.stderr, flush=True)
    first = next((r for r in results if "device" in r), {})
    threads = args.threads or torch.get_num_threads()
    print(f"preset {args.preset}: batch {B}, {R} px, {args.steps} timed steps after {args.warmup} warm-up, "
          f"device {first.get('gpu') or first.get('device')}, compile backend {args.compile_backend}, "
          f"mixed precision {preset['mixed_precision']}, threads {threads}")  # fmt: skip
    print(table(results, peak_tflops(first.get("gpu"), args.peak_tflops)))
    if args.profile:
        print(profile_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
