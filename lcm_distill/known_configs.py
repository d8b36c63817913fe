"""Network configurations of the public checkpoints the toolkit knows without the Hub: Stable Diffusion 2.1
(``stabilityai/stable-diffusion-2-1``, 768 px, v-prediction, upcast attention), 2.1-base
(``stabilityai/stable-diffusion-2-1-base``, 512 px, epsilon) and 1.5 (``stable-diffusion-v1-5/stable-diffusion-v1-5``,
512 px, epsilon, CLIP ViT-L/14 text encoder), key for key where a key changes a shape or a code path.

The memory planner reads them when a hub id is not in the local cache (``--dry-run`` offline); the test kit
(lcm_distill/testing/sd21.py) builds random-weight networks from them. Parameter counts of the Hub weights are
asserted by the tests, so a diffusers change that alters the networks fails loudly.
"""

from __future__ import annotations

from typing import Any

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
    v = sd21_variant(variant)
    return {**_UNET, "sample_size": v["resolution"] // 8, "upcast_attention": v["upcast_attention"]}


def sd21_vae_config(variant: str = "sd21-base") -> dict[str, Any]:
    return {**_VAE, "sample_size": sd21_variant(variant)["resolution"]}


def sd21_text_config() -> dict[str, Any]:
    return dict(_TEXT)


# SD 1.5: the SD 2.x UNet layout with 8 heads of SD 1.x, 768-d cross-attention and convolutional projections; the
# same VAE; OpenAI's CLIP ViT-L/14 text tower (12 layers, quick-GELU). The Hub folder moved from runwayml/ in 2024.
SD15 = {"hub_id": "stable-diffusion-v1-5/stable-diffusion-v1-5", "aliases": ("runwayml/stable-diffusion-v1-5",),
        "resolution": 512, "upcast_attention": False, "scheduler": "PNDMScheduler", "prediction_type": "epsilon"}
SD15_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}


def sd15_unet_config() -> dict[str, Any]:
    return {**_UNET, "attention_head_dim": 8, "cross_attention_dim": 768, "use_linear_projection": False,
            "sample_size": SD15["resolution"] // 8, "upcast_attention": False}  # fmt: skip


def sd15_text_config() -> dict[str, Any]:
    return {**_TEXT, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip


# SDXL base 1.0: three UNet levels (no attention at the first), 1 / 2 / 10 transformer layers per block, 2048-d
# context (CLIP ViT-L 768 + OpenCLIP bigG 1280, penultimate layers), "text_time" added conditioning (bigG's pooled
# 1280 + six time ids x 256); the SD VAE with scaling 0.13025 (fp16 overflows: force_upcast); 1024 px.
SDXL = {"hub_id": "stabilityai/stable-diffusion-xl-base-1.0", "resolution": 1024, "scheduler": "EulerDiscreteScheduler",
        "prediction_type": "epsilon"}  # fmt: skip
SDXL_PARAMS = {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840}


def sdxl_unet_config() -> dict[str, Any]:
    return {**_UNET, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
            "cross_attention_dim": 2048, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D",
                                                              "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2, 10], "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816, "sample_size": SDXL["resolution"] // 8,
            "upcast_attention": None}  # fmt: skip


def sdxl_text_2_config() -> dict[str, Any]:
    """OpenCLIP ViT-bigG/14's text tower as SDXL ships it (CLIPTextModelWithProjection: 32 layers, 1280-d)."""
    return {**_TEXT, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
            "num_attention_heads": 20, "projection_dim": 1280}  # fmt: skip


def known_network_config(source: str, subfolder: str) -> dict[str, Any] | None:
    """The config.json of ``source``'s ``subfolder`` (unet, vae, text_encoder, text_encoder_2) when ``source`` is a
    hub id listed above, else None."""
    if source == SDXL["hub_id"]:
        configs = {"unet": sdxl_unet_config, "vae": lambda: {**_VAE, "sample_size": SDXL["resolution"],
                                                              "scaling_factor": 0.13025, "force_upcast": True},
                   "text_encoder": sd15_text_config, "text_encoder_2": sdxl_text_2_config}  # fmt: skip
        return configs[subfolder]() if subfolder in configs else None
    if source in (SD15["hub_id"], *SD15["aliases"]):
        configs = {"unet": sd15_unet_config, "vae": lambda: {**_VAE, "sample_size": SD15["resolution"]},
                   "text_encoder": sd15_text_config}  # fmt: skip
        return configs[subfolder]() if subfolder in configs else None
    for variant, spec in SD21_VARIANTS.items():
        if spec["hub_id"] == source:
            configs = {"unet": sd21_unet_config, "vae": sd21_vae_config, "text_encoder": lambda _: sd21_text_config()}
            return configs[subfolder](variant) if subfolder in configs else None
    return None


def sd21_variant(name: str) -> dict[str, Any]:
    if name not in SD21_VARIANTS:
        raise ValueError(f"unknown SD 2.1 variant {name!r}; one of {sorted(SD21_VARIANTS)}")
    return SD21_VARIANTS[name]
