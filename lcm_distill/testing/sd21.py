"""Stable Diffusion 2.1 and 2.1-base at their true shapes, with random weights, built offline.

The configurations are those of the Hub folders ``stabilityai/stable-diffusion-2-1`` (768 px, v-prediction, upcast
attention) and ``stabilityai/stable-diffusion-2-1-base`` (512 px, epsilon), key for key where the key changes a
shape or a code path: the UNet's block layout, head dims, linear projections and ``upcast_attention``; the SD VAE;
the OpenCLIP ViT-H text encoder cut to 23 layers (SD 2.x reads the penultimate layer, so the Hub folder holds 23);
the tokenizer's ``!`` padding; the scheduler class and prediction type. Parameter counts are asserted, so a
diffusers change that alters the networks fails loudly instead of rehearsing the wrong model.

Why: no shipped SD recipe can be tried here with real weights (no Hub at run time), but every bug of scale - dtype,
attention, upcast, v-prediction, LoRA target names, memory - shows with random weights at the true shapes.
Used by benchmarks/scale_rehearsal.py, benchmarks/train_step.py (--preset sd21) and the memory planner's tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..known_configs import (  # noqa: F401  (the test kit's SD 2.1 names)
    SD21_PARAMS,
    SD21_VARIANTS,
    sd21_text_config,
    sd21_unet_config,
    sd21_vae_config,
    sd21_variant,
)
from .tiny import SD_SCHEDULER_CONFIG
from .tokenizer import build_clip_tokenizer


def sd21_scheduler_config(variant: str = "sd21-base") -> dict[str, Any]:
    """The Hub file's keys (PNDM ignores clip_sample, as diffusers does when it loads that file)."""
    v = sd21_variant(variant)
    extra = {"skip_prk_steps": True} if v["scheduler"] == "PNDMScheduler" else {}
    return {**SD_SCHEDULER_CONFIG, "prediction_type": v["prediction_type"], **extra}


def sd21_components(variant: str, work_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, scheduler of the variant with PyTorch's default (random) init.

    Under ``with torch.device("meta"):`` this costs nothing and still has every shape (the tests count parameters
    that way). The tokenizer is the full CLIP BPE with SD 2.x's ``!`` padding (OpenCLIP pads with id 0).
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    v = sd21_variant(variant)
    torch.manual_seed(seed)
    comps = {
        "unet": UNet2DConditionModel(**sd21_unet_config(variant)),
        "vae": AutoencoderKL(**sd21_vae_config(variant)),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**sd21_text_config())),
        "tokenizer": build_clip_tokenizer(Path(work_dir) / "tokenizer-src", pad_token="!"),
        "scheduler": getattr(diffusers, v["scheduler"]).from_config(sd21_scheduler_config(variant)),
    }
    counts = parameter_counts(comps)
    if counts != SD21_PARAMS:
        raise RuntimeError(
            f"{variant}: parameter counts {counts} differ from SD 2.1's {SD21_PARAMS}; did a diffusers or "
            "transformers upgrade change the networks? Update lcm_distill/testing/sd21.py."
        )
    return comps


def parameter_counts(comps: dict[str, Any]) -> dict[str, int]:
    return {k: sum(p.numel() for p in comps[k].parameters()) for k in SD21_PARAMS}


def save_sd21(out_dir: str | Path, variant: str = "sd21-base", dtype: torch.dtype = torch.float32) -> Path:
    """Write a random-weight SD 2.1 folder in the Hub's StableDiffusionPipeline layout (fp32 like the Hub's
    default weights: ~5.2 GB). A folder that already holds a finished save of the same variant is reused."""
    from diffusers import StableDiffusionPipeline

    out = Path(out_dir)
    stamp = out / ".lcm-distill-sd21"
    if stamp.is_file() and stamp.read_text() == f"{variant} {dtype}":
        return out
    comps = sd21_components(variant, out.parent / f".{out.name}-build")
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(out, safe_serialization=True)
    stamp.write_text(f"{variant} {dtype}")
    return out
