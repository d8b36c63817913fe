"""FID / KID on cached features (computed by torchmetrics) and prompt-fidelity scorers (CLIP score, pluggable).

Features are extracted once per image set (see features.py) and handed to torchmetrics through a pass-through
"feature network": the reference set's features are then computed once for a whole sweep of step counts and
guidance scales instead of once per setting, while the FID/KID arithmetic stays torchmetrics' own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


class _Passthrough(nn.Module):
    """Identity "feature network" so torchmetrics accepts precomputed (N, D) features as its inputs."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torchmetrics FrechetInceptionDistance)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_pair(real, fake, minimum=2)
    metric = FrechetInceptionDistance(feature=_Passthrough(real.shape[1]), normalize=True)
    metric.set_dtype(torch.float64)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(
    real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over random subsets) by torchmetrics; unbiased, fine for small N.

    ``subset_size`` is capped at the smaller set size; the subset draws are seeded so a report is reproducible.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_pair(real, fake, minimum=2)
    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features": they are ours already
        metric = KernelInceptionDistance(feature=_Passthrough(real.shape[1]), subsets=subsets, subset_size=size,
                                         normalize=True)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _check_pair(real: torch.Tensor, fake: torch.Tensor, minimum: int) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D; got {tuple(real.shape)} and {tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) < minimum:
        raise ValueError(f"FID/KID need at least {minimum} images per set; got {real.shape[0]} and {fake.shape[0]}")


@runtime_checkable
class PromptScorer(Protocol):
    """Scores how well each image shows its prompt: (images (N,3,H,W) in [0,1], prompts) -> (N,) scores.

    ``name`` keys the score in reports; ``higher_is_better`` orients plots.
    """

    name: str

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class ClipScoreConfig:
    """open_clip model for CLIP score. The LCM paper reports CLIP score with ViT-g/14 (LAION-2B s12B b42K).

    pretrained: an open_clip tag (downloaded by open_clip on first use), a local checkpoint path, or None for
    random weights (tests only: the number then says nothing about prompt fidelity).
    """

    model_name: str = "ViT-g-14"
    pretrained: str | None = "laion2b_s12b_b42k"
    device: str = "cpu"
    batch_size: int = 32


class ClipScorer:
    """CLIP score = 100 * max(cos(image_emb, text_emb), 0) per image (Hessel et al. 2021, torchmetrics' scale).

    Images are resized (bicubic, antialiased) and centre-cropped to the model's input size and normalised with the
    model's own mean/std, on tensors, so generated batches never round-trip through PIL.
    """

    name = "clip_score"
    higher_is_better = True

    def __init__(self, config: ClipScoreConfig | None = None) -> None:
        config = config or ClipScoreConfig()
        try:
            import open_clip
        except ModuleNotFoundError as err:  # pragma: no cover - exercised only without open_clip
            raise ModuleNotFoundError("CLIP score needs open_clip_torch: pip install open_clip_torch") from err
        self.config = config
        model = open_clip.create_model(config.model_name, pretrained=config.pretrained, device=config.device)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(config.model_name)
        pp = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = getattr(model.visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.mean = torch.tensor(pp.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
        self.std = torch.tensor(pp.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        h, w = self.image_size
        x = images.float().clamp(0, 1)
        scale = max(h / x.shape[-2], w / x.shape[-1])
        new = (max(h, round(x.shape[-2] * scale)), max(w, round(x.shape[-1] * scale)))
        x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (new[0] - h) // 2, (new[1] - w) // 2
        x = x[..., top : top + h, left : left + w]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        scores = []
        dev = self.config.device
        for i in range(0, len(prompts), self.config.batch_size):
            img = self._preprocess(images[i : i + self.config.batch_size]).to(dev)
            txt = self.tokenizer(prompts[i : i + self.config.batch_size]).to(dev)
            fi = F.normalize(self.model.encode_image(img).float(), dim=-1)
            ft = F.normalize(self.model.encode_text(txt).float(), dim=-1)
            scores.append((100.0 * (fi * ft).sum(-1)).clamp(min=0).cpu())
        return torch.cat(scores)
