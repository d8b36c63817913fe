"""Offline test kit: tiny SD components and a real CLIP tokenizer built without the Hub."""

from .data import make_imagefolder
from .tiny import (
    SD_SCHEDULER_CONFIG,
    save_tiny_public_lcm,
    save_tiny_sd,
    save_tiny_sdxl,
    tiny_components,
    tiny_scheduler_config,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)
from .tokenizer import build_clip_tokenizer, vocab_size, write_clip_tokenizer_files

__all__ = [
    "SD_SCHEDULER_CONFIG",
    "build_clip_tokenizer",
    "make_imagefolder",
    "save_tiny_public_lcm",
    "save_tiny_sd",
    "save_tiny_sdxl",
    "tiny_components",
    "tiny_scheduler_config",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_unet",
    "tiny_vae",
    "vocab_size",
    "write_clip_tokenizer_files",
]
