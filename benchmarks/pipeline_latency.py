#!/usr/bin/env python
"""Latency of our LCM pipeline at 1/2/4 steps against the teacher's 50-step CFG DDIM, with the non-UNet share.

    python benchmarks/pipeline_latency.py --preset sd21 --device cuda --dtype fp16     # SD-2.1-base shapes, 512 px
    python benchmarks/pipeline_latency.py --preset tiny                                # the offline kit, CPU, seconds
    python benchmarks/pipeline_latency.py --preset sdxl --device cuda --dtype fp16     # SDXL base shapes, 1024 px

Random weights at the true shapes (lcm_distill.testing.sd21): latency does not depend on the weights. The LCM is the
teacher's UNet with an omega input (time_cond_proj_dim 256), as LCD builds it. Each setting runs --warmup calls,
then --repeats timed calls of batch 1; lcm_distill.evaluation.LatencyMeter splits each image's time into text
encoder, UNet, VAE decode and the rest (scheduler, latents, post-processing), synchronising the device at each
boundary. "non-UNet share" = 1 - UNet / total: at 1-4 steps it is what a faster UNet can no longer buy back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill


def sdxl_pipelines(preset: str, work: Path):
    """SDXL: (teacher StableDiffusionXLPipeline with DDIM and CFG, the same class with the omega-conditioned student
    and an LCMScheduler - how an SDXL export samples, lcm_distill.export.lcm_pipeline), resolution."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    from lcm_distill.export import lcm_pipeline, lcm_scheduler
    from lcm_distill.models import build_student

    if preset == "sdxl":
        from lcm_distill.testing.sdxl import sdxl_components

        comps, res, dim = sdxl_components(work), 1024, 256
    else:  # the tiny SDXL kit
        from lcm_distill.testing import save_tiny_sdxl

        comps = dict(StableDiffusionXLPipeline.from_pretrained(save_tiny_sdxl(work / "tiny-sdxl")).components)
        res, dim = 16, 32
    sched_cfg = dict(comps["scheduler"].config)
    parts = {k: comps[k] for k in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")}
    teacher = StableDiffusionXLPipeline(unet=comps["unet"], scheduler=DDIMScheduler.from_config(sched_cfg),
                                        add_watermarker=False, **parts)  # fmt: skip
    lcm = lcm_pipeline(unet=build_student(comps["unet"], dim, "zero"), scheduler=lcm_scheduler(sched_cfg, 50),
                       **parts)  # fmt: skip
    return teacher, lcm, res


def pipelines(preset: str, work: Path, device: str, dtype: torch.dtype):
    """(teacher StableDiffusionPipeline with DDIM, LCMPipeline with the omega-conditioned student), resolution."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from lcm_distill.pipelines import LCMPipeline

    from lcm_distill.export import lcm_scheduler
    from lcm_distill.models import build_student
    from lcm_distill.testing import tiny_components
    from lcm_distill.testing.sd21 import SD21_VARIANTS, sd21_components

    if preset in ("sdxl", "tiny_sdxl"):
        teacher, lcm, res = sdxl_pipelines(preset, work)
    else:
        if preset == "tiny":
            comps, res = tiny_components(work), 16
        else:
            comps, res = sd21_components(preset, work), SD21_VARIANTS[preset]["resolution"]
        sched_cfg = dict(comps["scheduler"].config)
        student = build_student(comps["unet"], 256 if preset != "tiny" else 32, "zero")
        parts = {k: comps[k] for k in ("vae", "text_encoder", "tokenizer")}
        teacher = StableDiffusionPipeline(unet=comps["unet"], scheduler=DDIMScheduler.from_config(sched_cfg),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                                          **parts)  # fmt: skip
        lcm = LCMPipeline(unet=student, scheduler=lcm_scheduler(sched_cfg, 50), **parts)
    for p in (teacher, lcm):
        p.to(device, dtype)
        p.set_progress_bar_config(disable=True)
    return teacher, lcm, res


def time_setting(pipe, steps: int, guidance: float, res: int, warmup: int, repeats: int, device: str):
    from lcm_distill.evaluation import LatencyMeter

    prompt = "a photograph of an astronaut riding a horse"

    def call() -> None:
        pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=res, width=res,
             generator=torch.Generator().manual_seed(0), output_type="np")  # fmt: skip

    for _ in range(warmup):
        call()
    meter = LatencyMeter(device)
    with meter.attach(pipe):
        for _ in range(repeats):
            with meter.run(1):
                call()
    return meter.split()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset",
        default="tiny",
        choices=["tiny", "sd21-base", "sd21", "sdxl", "tiny_sdxl"],
        help="tiny kit (16 px) | SD 2.1-base (512 px) | SD 2.1 (768 px) | SDXL base (1024 px) | tiny SDXL kit",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--lcm-steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    from lcm_distill.conventions import DEFAULT_GUIDANCE_SCALE
    from lcm_distill.functional import DTYPES

    with tempfile.TemporaryDirectory() as work:
        teacher, lcm, res = pipelines(args.preset, Path(work), args.device, DTYPES[args.dtype])
        g = DEFAULT_GUIDANCE_SCALE
        rows = [(f"LCM {s} step{'s' if s > 1 else ''}", time_setting(lcm, s, g, res, args.warmup, args.repeats,
                                                                     args.device)) for s in args.lcm_steps]  # fmt: skip
        rows.append(
            (
                f"teacher DDIM {args.teacher_steps} steps, CFG 7.5",
                time_setting(teacher, args.teacher_steps, 7.5, res, args.warmup, args.repeats, args.device),
            )
        )
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"pipeline latency: preset {args.preset}, {res} px, batch 1, {args.dtype}, {gpu}, "
          f"{args.repeats} timed calls after {args.warmup} warm-up")  # fmt: skip
    teacher_total = rows[-1][1].total_s
    print("| sampler | s/image | UNet s | text encoder s | VAE decode s | other s | non-UNet share | vs teacher |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in rows:
        share = 1 - s.unet_s / s.total_s if s.total_s else 0.0
        print(f"| {name} | {s.total_s:.4f} | {s.unet_s:.4f} | {s.text_encoder_s:.4f} | {s.vae_decode_s:.4f} | "
              f"{s.other_s:.4f} | {share:.0%} | {teacher_total / s.total_s:.1f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
