"""Tiny Stable-Diffusion-shaped components built in-process (no network), for tests, demos and benchmarks.

Shapes mirror SD 2.x where it matters (linear attention projections, cross-attention, a scaled_linear schedule
with SD's scheduler settings) at a size that runs in milliseconds on a laptop CPU; ``family="sd1"`` gives the SD 1.x
variant (convolutional attention projections, quick-GELU text encoder), :func:`save_tiny_sdxl` an SDXL-shaped folder
(two text encoders, a UNet with "text_time" added conditioning). Each builder seeds torch so that a given call always
yields the same weights. lcm_distill/families.py tells the three apart from the written folders.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .tokenizer import build_clip_tokenizer, vocab_size

TINY_MERGES = 1000
TEXT_HIDDEN = 32

# SD 2.x scheduler settings (scaled_linear 0.00085..0.012, no alpha-to-one, no clipping, steps_offset 1).
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def tiny_unet(
    time_cond_proj_dim: int | None = None,
    sample_size: int = 8,
    block_out_channels: tuple[int, ...] = (32, 64),
    seed: int = 0,
    family: str = "sd2",
):
    """UNet2DConditionModel with SD-2-style linear projections (``family="sd1"``: SD 1.x's convolutional ones);
    ``time_cond_proj_dim`` adds the omega input."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=block_out_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=(2, 4),
        use_linear_projection=_family(family) == "sd2",
        norm_num_groups=8,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def _family(family: str) -> str:
    if family not in ("sd1", "sd2"):
        raise ValueError(f"family={family!r}: the tiny SD kit builds 'sd1' or 'sd2' (SDXL: save_tiny_sdxl)")
    return family


def tiny_vae(seed: int = 0, **extra):
    """AutoencoderKL with 4 latent channels and a down-sampling factor of 2 (``extra``: e.g. SDXL's scaling_factor)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
        **extra,
    )


def tiny_text_encoder(num_merges: int = TINY_MERGES, seed: int = 0, family: str = "sd2", with_projection: bool = False):
    """CLIPTextModel whose vocabulary matches :func:`tiny_tokenizer` (SD 1.x's CLIP uses quick-GELU, SD 2.x's
    OpenCLIP GELU); ``with_projection``: CLIPTextModelWithProjection, SDXL's second encoder (pooled embedding)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    n = vocab_size(num_merges)
    config = CLIPTextConfig(
        vocab_size=n,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=n - 2,
        eos_token_id=n - 1,
        pad_token_id=n - 1,
        hidden_act="quick_gelu" if _family(family) == "sd1" else "gelu",
        layer_norm_eps=1e-5,
        projection_dim=TEXT_HIDDEN,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def tiny_tokenizer(cache_dir: str | Path, num_merges: int = TINY_MERGES):
    """The real CLIP BPE with its first ``num_merges`` merges (ids of common words are those of SD's tokenizer)."""
    return build_clip_tokenizer(cache_dir, num_merges)


def tiny_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """SD 2.x scheduler settings with the given prediction type (2.1-base: epsilon, 2.1 768: v_prediction)."""
    return {**SD_SCHEDULER_CONFIG, "prediction_type": prediction_type}


def tiny_components(
    work_dir: str | Path,
    prediction_type: str = "epsilon",
    time_cond_proj_dim: int | None = None,
    scheduler: str = "ddim",
    family: str = "sd2",
) -> dict:
    """vae, text_encoder, tokenizer, unet and a scheduler: the components of a diffusers SD/LCM pipeline."""
    from diffusers import DDIMScheduler, LCMScheduler

    sched_cls = {"ddim": DDIMScheduler, "lcm": LCMScheduler}[scheduler]
    return {
        "unet": tiny_unet(time_cond_proj_dim, family=family),
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(family=family),
        "tokenizer": tiny_tokenizer(Path(work_dir) / "tokenizer-src"),
        "scheduler": sched_cls(**tiny_scheduler_config(prediction_type)),
    }


def save_tiny_sd(out_dir: str | Path, prediction_type: str = "epsilon", family: str = "sd2") -> Path:
    """Write a diffusers-format tiny SD teacher folder (StableDiffusionPipeline layout, safetensors); ``family``
    "sd1" or "sd2"."""
    from diffusers import StableDiffusionPipeline

    out = Path(out_dir)
    comps = tiny_components(out.parent / f".{out.name}-build", prediction_type, family=family)
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def save_tiny_public_lcm(out_dir: str | Path, time_cond_proj_dim: int = 32) -> Path:
    """A tiny LCM in the public LCM repos' layout (LatentConsistencyModelPipeline with a safety checker and its
    feature extractor, e.g. SimianLuo/LCM_Dreamshaper_v7), written as diffusers' save_pretrained does."""
    from diffusers import LatentConsistencyModelPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    out = Path(out_dir)
    small = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1)
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=small, projection_dim=32,
                                                      vision_config={**small, "image_size": 32, "patch_size": 8}))
    comps = tiny_components(out.parent / f".{out.name}-build", time_cond_proj_dim=time_cond_proj_dim,
                            scheduler="lcm")  # fmt: skip
    pipe = LatentConsistencyModelPipeline(**comps, safety_checker=checker,
                                          feature_extractor=CLIPImageProcessor(size=32, crop_size=32))  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def save_tiny_sdxl(out_dir: str | Path) -> Path:
    """Write a tiny SDXL-shaped folder (StableDiffusionXLPipeline layout): two CLIP text encoders (the second with
    the projection that gives the pooled embedding), a UNet whose cross-attention takes both encoders' hidden states
    concatenated and whose "text_time" added conditioning takes the pooled embedding and six size/crop time ids, and
    SDXL's VAE scaling factor 0.13025."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    out = Path(out_dir)
    time_dim = 8
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TEXT_HIDDEN, attention_head_dim=(2, 4), use_linear_projection=True,
        norm_num_groups=8, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_HIDDEN,
    )  # fmt: skip
    vae = tiny_vae(scaling_factor=0.13025, force_upcast=True)
    tokenizer = tiny_tokenizer(out.parent / f".{out.name}-build" / "tokenizer-src")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=tiny_text_encoder(), text_encoder_2=tiny_text_encoder(seed=1, with_projection=True),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(tiny_scheduler_config("epsilon")),
    )  # fmt: skip
    pipe.save_pretrained(out, safe_serialization=True)
    return out
