"""SDXL base 1.0 at its true shapes, with random weights, built offline.

The configurations are those of the Hub folder ``stabilityai/stable-diffusion-xl-base-1.0`` where a key changes a
shape or a code path (lcm_distill/known_configs.py: the three-level UNet with 1 / 2 / 10 transformer layers, 2048-d
context, "text_time" added conditioning; the SD VAE with scaling 0.13025; CLIP ViT-L and OpenCLIP bigG text
encoders, the second with its projection; tokenizers padding with the end token and with ``!``; the Euler
scheduler's epsilon schedule). Parameter counts are asserted. Used by benchmarks/scale_rehearsal.py: every bug of
scale - added-conditioning widths, LoRA target names, dtype, memory - shows with random weights at the true shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..known_configs import SDXL, SDXL_PARAMS, known_network_config
from .tiny import SD_SCHEDULER_CONFIG
from .tokenizer import build_clip_tokenizer

SDXL_SCHEDULER_CONFIG = {**SD_SCHEDULER_CONFIG, "prediction_type": "epsilon", "timestep_spacing": "leading",
                         "interpolation_type": "linear", "use_karras_sigmas": False}  # fmt: skip


def sdxl_components(work_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """unet, vae, text_encoder(_2), tokenizer(_2), scheduler with PyTorch's default (random) init (~3.3 B
    parameters, 13 GB in fp32; under ``with torch.device("meta"):`` nothing)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hub = SDXL["hub_id"]
    torch.manual_seed(seed)
    comps = {
        "unet": UNet2DConditionModel(**known_network_config(hub, "unet")),
        "vae": AutoencoderKL(**known_network_config(hub, "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**known_network_config(hub, "text_encoder"))),
        "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**known_network_config(hub, "text_encoder_2"))),
        "tokenizer": build_clip_tokenizer(Path(work_dir) / "tokenizer-src"),
        "tokenizer_2": build_clip_tokenizer(Path(work_dir) / "tokenizer-2-src", pad_token="!"),
    }
    with torch.device("cpu"):  # its tables hold data, also when the networks are built on the meta device
        comps["scheduler"] = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    counts = {k: sum(p.numel() for p in comps[k].parameters()) for k in SDXL_PARAMS}
    if counts != SDXL_PARAMS:
        raise RuntimeError(f"SDXL parameter counts {counts} differ from the Hub's {SDXL_PARAMS}; did a diffusers "
                           "or transformers upgrade change the networks? Update lcm_distill/known_configs.py.")
    return comps


def save_sdxl(out_dir: str | Path) -> Path:
    """Write a random-weight SDXL base folder in the Hub's StableDiffusionXLPipeline layout (fp32 like the Hub's
    default weights: ~13 GB). A folder that already holds a finished save is reused."""
    from diffusers import StableDiffusionXLPipeline

    out = Path(out_dir)
    stamp = out / ".lcm-distill-sdxl"
    if stamp.is_file():
        return out
    pipe = StableDiffusionXLPipeline(**sdxl_components(out.parent / f".{out.name}-build"), add_watermarker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    stamp.write_text("sdxl fp32")
    return out
