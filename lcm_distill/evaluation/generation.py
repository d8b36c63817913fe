"""Seeded, batched generation through any diffusers text-to-image pipeline, and scheduler swapping for teachers.

Seeding is per image (image i always starts from the noise of ``seed + i``), so a result does not depend on the
batch size, and the teacher at 50 steps, the teacher at 2 steps and the LCM at 2 steps all start from the same
noise for the same prompt: differences between rows of a report are the sampler's, not the dice's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from .latency import LatencyMeter

KINDS = ("lcm", "teacher-ddim", "teacher-dpmpp", "teacher-dpm")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")


def configure_scheduler(pipe, kind: str, timestep_spacing: str = "trailing") -> None:
    """Give ``pipe`` the sampler that ``kind`` names, built from the pipeline's own scheduler config.

    teacher-ddim: DDIM (eta 0). teacher-dpmpp: DPM-Solver++ 2M (data prediction), teacher-dpm: DPM-Solver 2M (noise
    prediction) - the LCM paper's Table 1 baselines. lcm: LCMScheduler (its skipping-step grid of
    ``original_inference_steps``), kept if already set. ``timestep_spacing`` applies to the teacher samplers only;
    "trailing" starts at t=999 even at 1-2 steps, the fair few-step baseline ("leading" starts 1 step at t=1 and
    is reported as noise).
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; use one of {KINDS}.")
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing={timestep_spacing!r} is not supported; use one of {TIMESTEP_SPACINGS}.")
    config = dict(pipe.scheduler.config)
    if kind == "lcm":
        if not isinstance(pipe.scheduler, LCMScheduler):
            pipe.scheduler = LCMScheduler.from_config(config)
        return
    # Overrides go in as keyword arguments: from_config drops keys listed in the config's _use_default_values.
    if kind == "teacher-ddim":
        pipe.scheduler = DDIMScheduler.from_config(config, timestep_spacing=timestep_spacing)
    elif kind == "teacher-dpmpp":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            config, timestep_spacing=timestep_spacing, algorithm_type="dpmsolver++", solver_order=2,
            final_sigmas_type="zero",
        )
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # diffusers flags the noise-prediction variant as deprecated
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(
                config, timestep_spacing=timestep_spacing, algorithm_type="dpmsolver", solver_order=2,
                final_sigmas_type="sigma_min",
            )


def load_pipeline(model: str, kind: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  timestep_spacing: str = "trailing"):
    """Load a local (or Hub) diffusers folder as the pipeline ``kind`` needs and set its sampler.

    lcm: our ``LCMPipeline`` when importable (it also runs UNets without the omega embedding), else diffusers'
    ``LatentConsistencyModelPipeline`` (w-conditioned UNets) or ``StableDiffusionPipeline`` + LCMScheduler (UNets
    without it, where guidance is plain CFG). Teachers: ``StableDiffusionPipeline``. SDXL folders: our
    ``LCMXLPipeline`` for lcm (stock's images at cfg_scale 1), else ``StableDiffusionXLPipeline``.
    """
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline, UNet2DConditionModel

    from ..models import read_family

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not supported; use one of {KINDS}.")
    if read_family(model).name == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        from lcm_distill.pipelines import LCMXLPipeline  # stock's images, plus cfg_scale / negative prompts

        xl = LCMXLPipeline if kind == "lcm" else StableDiffusionXLPipeline
        pipe = xl.from_pretrained(model, torch_dtype=dtype, add_watermarker=False)
        configure_scheduler(pipe, kind, timestep_spacing)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)
    cls = StableDiffusionPipeline
    if kind == "lcm":
        try:
            from lcm_distill.pipelines import LCMPipeline as cls
        except ImportError:
            unet_cfg = UNet2DConditionModel.load_config(model, subfolder="unet")
            if unet_cfg.get("time_cond_proj_dim") is not None:
                cls = LatentConsistencyModelPipeline
    pipe = cls.from_pretrained(model, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
    configure_scheduler(pipe, kind, timestep_spacing)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _to_nchw(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images.float()
        return x if x.shape[1] in (1, 3) else x.permute(0, 3, 1, 2)
    if isinstance(images, np.ndarray):
        return torch.from_numpy(images).float().permute(0, 3, 1, 2)
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])  # list of PIL
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    num_inference_steps: int,
    guidance_scale: float,
    seed: int = 0,
    batch_size: int = 16,
    meter: LatencyMeter | None = None,
    **call_kwargs,
) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] for ``prompts``, image i seeded with ``seed + i``, ``batch_size`` per call.

    ``guidance_scale`` is diffusers' g for every kind (omega = g - 1 in the LCM paper's notation): CFG weight for
    teachers, the embedded omega for w-conditioned students.
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps} must be >= 1")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        gens = [torch.Generator("cpu").manual_seed(seed + start + j) for j in range(len(chunk))]
        kwargs = {"prompt": chunk, "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale,
                  "generator": gens, "output_type": "np", **call_kwargs}
        if meter is None:
            result = pipe(**kwargs)
        else:
            with meter.run(len(chunk)):
                result = pipe(**kwargs)
        out.append(_to_nchw(result.images).clamp(0, 1).cpu())
    return torch.cat(out)
