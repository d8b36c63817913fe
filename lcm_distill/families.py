"""Which Stable Diffusion family a model folder holds - read from its configs, never from a flag a user can get wrong.

- ``sd1`` (SD 1.x, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5): CLIP ViT-L/14 text encoder, 768-d cross-attention,
  convolutional attention projections (``use_linear_projection`` false).
- ``sd2`` (SD 2.x, stabilityai/stable-diffusion-2-1[-base]): OpenCLIP ViT-H text encoder, 1024-d cross-attention,
  linear attention projections. The toolkit's tiny test models are SD-2-shaped.
- ``sdxl`` (stabilityai/stable-diffusion-xl-base-1.0): a second text encoder, and a UNet that takes
  ``added_cond_kwargs`` (pooled text embedding + size/crop time ids: ``addition_embed_type`` "text_time").

Why it matters: the family decides how the UNet is conditioned (lcm_distill/conditioning.py: one encoder's last
hidden state for SD 1.x / 2.x; two encoders' penultimate states, a pooled embedding and size/crop time ids for
SDXL) and what an export is (our LCMPipeline folder, or a StableDiffusionXLPipeline folder). The engine reads the
family from the loaded components; the preflight reads it from the configs to refuse, before any weight is loaded,
what a family cannot run (a missing second encoder, SDXL's VAE in fp16). The rules read what changes a code path in
diffusers, so they hold for fine-tunes (DreamShaper, ...) and for tiny test models alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    extra_components: tuple[str, ...] = ()  # subfolders beyond unet / vae / text_encoder / tokenizer
    fp16_vae_overflows: bool = False  # its VAE gives NaN latents in fp16 (SDXL's; an fp16-fix VAE via model.vae)


FAMILIES: dict[str, Family] = {
    "sd1": Family("sd1", "Stable Diffusion 1.x"),  # e.g. stable-diffusion-v1-5/stable-diffusion-v1-5
    "sd2": Family("sd2", "Stable Diffusion 2.x"),  # e.g. stabilityai/stable-diffusion-2-1-base
    "sdxl": Family("sdxl", "Stable Diffusion XL", ("text_encoder_2", "tokenizer_2"), fp16_vae_overflows=True),
    # e.g. stabilityai/stable-diffusion-xl-base-1.0
}


def family_of(unet_config: Mapping[str, Any], model_index: Mapping[str, Any] | None = None) -> Family:
    """The family of a pipeline from its ``unet/config.json`` (and ``model_index.json`` when at hand).

    SDXL: the UNet's added "text_time" conditioning, or a second text encoder in the pipeline. Otherwise SD 2.x when
    the transformer blocks use linear projections (``use_linear_projection``), SD 1.x when they do not.
    """
    index = model_index or {}
    if unet_config.get("addition_embed_type") == "text_time" or "text_encoder_2" in index:
        return FAMILIES["sdxl"]
    return FAMILIES["sd2" if unet_config.get("use_linear_projection") else "sd1"]
