"""Architectures of the testbed: tiny SD components sized for 16x16 images and a digit/colour classifier.

The SD parts are ordinary diffusers/transformers classes (AutoencoderKL, UNet2DConditionModel, CLIPTextModel with
the real CLIP BPE tokenizer), so every pipeline, script and test that works on Stable Diffusion folders works on the
testbed teachers unchanged. Sizes are chosen for a 2-core CPU: a teacher forward on a batch of 64 8x8 latents
costs tens of milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .digits import COLOR_NAMES, DIGITS


@dataclass(frozen=True)
class VAEArch:
    """AutoencoderKL with 4 latent channels; two blocks = down-sampling by 2 (16x16 images -> 8x8 latents)."""

    block_out_channels: tuple[int, ...] = (16, 32)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    latent_channels: int = 4
    sample_size: int = 16


@dataclass(frozen=True)
class UNetArch:
    """SD-style UNet2DConditionModel: cross-attention at the 8x8 level, linear projections as in SD 2.x."""

    block_out_channels: tuple[int, ...] = (32, 64)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D")
    attention_head_dim: tuple[int, ...] = (2, 4)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    cross_attention_dim: int = 32
    sample_size: int = 8
    addition_time_embed_dim: int = 0  # > 0: SDXL's "text_time" added conditioning (pooled text + six time ids)
    pooled_dim: int = 0  # SDXL: width of the second text encoder's pooled (projected) embedding


SDXL_ARCH = UNetArch(cross_attention_dim=64, addition_time_embed_dim=8, pooled_dim=32)
"""The SDXL-shaped testbed teacher: the SD teacher's blocks; cross-attention over two 32-wide encoders' states side
by side, and "text_time" added conditioning, as in stabilityai/stable-diffusion-xl-base-1.0."""


def build_vae(arch: VAEArch | None = None, seed: int = 0):
    """A fresh AutoencoderKL (scaling_factor is set after training from the latents' std)."""
    arch = arch or VAEArch()
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    n = len(arch.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=arch.block_out_channels,
        layers_per_block=arch.layers_per_block,
        latent_channels=arch.latent_channels,
        norm_num_groups=arch.norm_num_groups,
        sample_size=arch.sample_size,
    )


def build_unet(arch: UNetArch | None = None, seed: int = 0):
    """A fresh teacher UNet (no time_cond_proj_dim: teachers take no omega input, students add it)."""
    arch = arch or UNetArch()
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    added = {}
    if arch.addition_time_embed_dim:
        added = {"addition_embed_type": "text_time", "addition_time_embed_dim": arch.addition_time_embed_dim,
                 "projection_class_embeddings_input_dim": 6 * arch.addition_time_embed_dim + arch.pooled_dim}
    return UNet2DConditionModel(
        sample_size=arch.sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=arch.layers_per_block,
        block_out_channels=arch.block_out_channels,
        down_block_types=arch.down_block_types,
        up_block_types=arch.up_block_types,
        cross_attention_dim=arch.cross_attention_dim,
        attention_head_dim=arch.attention_head_dim,
        use_linear_projection=True,
        norm_num_groups=arch.norm_num_groups,
        **added,
    )


@dataclass(frozen=True)
class ClassifierArch:
    """Small CNN with two heads (digit, colour); its pooled features double as the domain FID features."""

    width: int = 32
    num_features: int = 128
    image_size: int = 16
    num_digits: int = len(DIGITS)
    num_colors: int = len(COLOR_NAMES)
    colors: tuple[str, ...] = field(default=COLOR_NAMES)


class DigitColorClassifier(nn.Module):
    """Reads a [0, 1] RGB image (any size; resized to ``image_size``) -> digit and colour logits.

    ``features`` is the global-average-pooled last conv layer (like Inception's pool3 for FID): trained to separate
    the 60 prompts, it is sensitive to exactly what the testbed asks of a generator.
    """

    def __init__(self, arch: ClassifierArch | None = None) -> None:
        super().__init__()
        arch = arch or ClassifierArch()
        self.arch = arch
        w, f = arch.width, arch.num_features

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

        self.body = nn.Sequential(
            block(3, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1), block(2 * w, f, 2)
        )
        self.digit_head = nn.Linear(f, arch.num_digits)
        self.color_head = nn.Linear(f, arch.num_colors)
        self.num_features = f  # torchmetrics reads this attribute to size its FID/KID states

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images in [0, 1], got shape {tuple(images.shape)}")
        size = self.arch.image_size
        x = images.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x * 2.0 - 1.0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self._prepare(images)).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(images)
        return self.digit_head(h), self.color_head(h)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (loadable with :meth:`load`)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(self.arch), indent=1) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, out / "model.safetensors")
        return out

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> DigitColorClassifier:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "model.safetensors").exists():
            raise FileNotFoundError(
                f"{path}/model.safetensors not found: expected a testbed classifier folder "
                "(assets/testbed/classifier, or regenerate it with `python -m lcm_distill.testbed.build`)."
            )
        cfg = json.loads((path / "config.json").read_text())
        cfg["colors"] = tuple(cfg.get("colors", COLOR_NAMES))
        net = cls(ClassifierArch(**cfg))
        net.load_state_dict(load_file(path / "model.safetensors"))
        return net.to(device).eval().requires_grad_(False)
