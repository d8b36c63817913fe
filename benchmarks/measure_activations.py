#!/usr/bin/env python
"""Measure a UNet's activation memory per sample, once per architecture, for the memory planner.

    python benchmarks/measure_activations.py --arch sd21-base sd21 tiny   # -> lcm_distill/engine/activations.json
    python benchmarks/measure_activations.py --teacher path/to/sd-folder  # any UNet2DConditionModel folder

For each architecture, at two latent sizes, batch 1, each of these in its own fresh process:
  {precision}/train       student forward + backward (all weights trainable), bytes above the weights and gradients
  {precision}/train_ckpt  the same with gradient checkpointing
  {precision}/lora        LoRA adapters only (the config's default targets, rank 64; base in bf16 under bf16, as the
                          engine holds it), no checkpointing
  {precision}/lora_ckpt   the same with gradient checkpointing
  {precision}/nograd      a no-grad forward (the teacher / target), peak bytes above the weights
precision: bf16 (autocast; what every SD recipe trains in) and fp32 (train.mixed_precision=no).

How: the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs after a warm-up step) minus its
resident memory before the timed pass, with glibc's mmap threshold pinned at 64 KiB (MALLOC_MMAP_THRESHOLD_) so that
freed tensors leave the resident set as on a GPU allocator. The figure includes backward transients, not only the
tensors saved for backward. It is a CPU measurement (CPU autocast, SDPA's CPU kernels); compare it with CUDA
max_memory_allocated when a GPU is at hand (benchmarks/gpu_check.sh) and say the error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill

KINDS = ("train", "train_ckpt", "lora", "lora_ckpt", "nograd")
# two latent sizes per architecture: SD 2.1-base at 256 and 512 px, SD 2.1 at 384 and 768 px (what its recipe uses)
LATENTS = {"sd21-base": (32, 64), "sd21": (48, 96), "tiny": (8, 16)}
PRECISIONS = {"sd21-base": ("bf16",), "sd21": ("bf16",)}  # every SD recipe trains under bf16 autocast


def _rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS"))


def _hwm() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def _unet_config(arch: str) -> dict:
    if arch == "tiny":
        from lcm_distill.testing import tiny_unet

        return dict(tiny_unet().config)
    if arch in LATENTS:
        from lcm_distill.testing.sd21 import sd21_unet_config

        return sd21_unet_config(arch)
    return json.loads((Path(arch) / "unet" / "config.json").read_text())


def worker(arch: str, kind: str, precision: str, hw: int) -> int:
    """Run in a child: one measurement, printed as JSON."""
    import torch
    from diffusers import UNet2DConditionModel

    from lcm_distill.config import DEFAULT_LORA_TARGETS

    torch.manual_seed(0)
    cfg = _unet_config(arch)
    unet = UNet2DConditionModel.from_config({**cfg, "time_cond_proj_dim": 256})
    lora = kind.startswith("lora")
    if lora:
        from peft import LoraConfig

        unet.requires_grad_(False)
        if precision == "bf16":  # as the engine holds it: the frozen base in model.frozen_dtype, adapters fp32
            unet.to(torch.bfloat16)
        unet.add_adapter(LoraConfig(r=64, lora_alpha=64, target_modules=list(DEFAULT_LORA_TARGETS)))
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)
                p.data = p.data.float()
    if kind.endswith("_ckpt"):
        unet.enable_gradient_checkpointing()
    x = torch.randn(1, 4, hw, hw)
    ctx = torch.randn(1, 77, cfg["cross_attention_dim"])
    t = torch.tensor([499])
    cond = torch.randn(1, 256)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def once() -> None:
        if kind == "nograd":
            with torch.no_grad(), amp:
                unet(x, t, encoder_hidden_states=ctx, timestep_cond=cond).sample.float().sum()
            return
        unet.train()
        with amp:
            out = unet(x, t, encoder_hidden_states=ctx, timestep_cond=cond).sample
        out.float().square().mean().backward()

    for p in unet.parameters():  # gradients exist before the measured pass (as from the second step of a run on)
        if p.requires_grad and kind != "nograd":
            p.grad = torch.zeros_like(p)
    before = _rss()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    once()
    print(json.dumps({"bytes": _hwm() - before}))
    return 0


def measure(arch: str, kinds: list[str], precisions: list[str]) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", HF_HUB_OFFLINE="1")
    result: dict = {}
    for precision in [p for p in precisions if p in PRECISIONS.get(arch, precisions)]:
        for kind in kinds:
            for hw in LATENTS.get(arch, (16, 32)):
                out = subprocess.run([sys.executable, __file__, "--worker", arch, kind, precision, str(hw)],
                                     env=env, capture_output=True, text=True, check=False)  # fmt: skip
                if out.returncode != 0:
                    raise RuntimeError(f"{arch} {precision}/{kind} at {hw}x{hw}: {out.stderr[-2000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])["bytes"]
                result.setdefault(f"{precision}/{kind}", {})[str(hw * hw)] = got
                print(f"{arch} {precision}/{kind} latents {hw}x{hw}: {got / 2**30:.3f} GiB/sample", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="*", default=[], help=f"presets: {', '.join(LATENTS)}")
    p.add_argument("--teacher", nargs="*", default=[], help="diffusers folders with a unet/config.json")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--worker", nargs=4, metavar=("ARCH", "KIND", "PRECISION", "HW"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        arch, kind, precision, hw = args.worker
        return worker(arch, kind, precision, int(hw))
    from lcm_distill.engine.memory import ACTIVATIONS_FILE, architecture_key

    table = json.loads(ACTIVATIONS_FILE.read_text()) if ACTIVATIONS_FILE.is_file() else {}
    for arch in [*args.arch, *args.teacher]:
        key = architecture_key(_unet_config(arch))
        table.setdefault(key, {}).update(measure(arch, args.kinds.split(","), args.precisions.split(",")))
        table[key]["_measured_with"] = f"benchmarks/measure_activations.py ({arch}), CPU, batch 1"
        ACTIVATIONS_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {ACTIVATIONS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
