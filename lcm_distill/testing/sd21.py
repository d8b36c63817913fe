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

from .tiny import SD_SCHEDULER_CONFIG
from .tokenizer import build_clip_tokenizer

_UNET = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}
_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
_TEXT = {  # OpenCLIP ViT-H/14 text tower as SD 2.x ships it (23 of 24 layers)
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 512,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

# variant -> what differs between the two Hub folders
SD21_VARIANTS: dict[str, dict[str, Any]] = {
    "sd21-base": {"hub_id": "stabilityai/stable-diffusion-2-1-base", "resolution": 512, "upcast_attention": False,
                  "scheduler": "PNDMScheduler", "prediction_type": "epsilon"},
    "sd21": {"hub_id": "stabilityai/stable-diffusion-2-1", "resolution": 768, "upcast_attention": True,
             "scheduler": "DDIMScheduler", "prediction_type": "v_prediction"},
}  # fmt: skip
# parameter counts of the Hub weights (identical for both variants)
SD21_PARAMS = {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}


def sd21_unet_config(variant: str = "sd21-base") -> dict[str, Any]:
    """UNet2DConditionModel config of the variant (``sample_size`` = resolution / 8, ``upcast_attention``)."""
    v = _variant(variant)
    return {**_UNET, "sample_size": v["resolution"] // 8, "upcast_attention": v["upcast_attention"]}


def sd21_vae_config(variant: str = "sd21-base") -> dict[str, Any]:
    return {**_VAE, "sample_size": _variant(variant)["resolution"]}


def sd21_text_config() -> dict[str, Any]:
    return dict(_TEXT)


def sd21_scheduler_config(variant: str = "sd21-base") -> dict[str, Any]:
    """The Hub file's keys (PNDM ignores clip_sample, as diffusers does when it loads that file)."""
    v = _variant(variant)
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

    v = _variant(variant)
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


def _variant(name: str) -> dict[str, Any]:
    if name not in SD21_VARIANTS:
        raise ValueError(f"unknown SD 2.1 variant {name!r}; one of {sorted(SD21_VARIANTS)}")
    return SD21_VARIANTS[name]
