"""The testbed's stand-ins for Inception and CLIP: domain FID features and a prompt-accuracy scorer.

Both come from one classifier trained on the testbed's train split (digit and colour heads). Prompt accuracy is
the share of images whose predicted digit AND colour equal those in the prompt: a direct, interpretable measure of
whether guidance works, where CLIP score on 16x16 digits would be noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ..evaluation.features import ModuleFeatures
from .digits import parse_caption
from .models import DigitColorClassifier


class _FeatureHead(torch.nn.Module):
    def __init__(self, net: DigitColorClassifier) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.features(images)


def load_classifier(testbed_dir: str | Path, device: str | torch.device = "cpu") -> DigitColorClassifier:
    return DigitColorClassifier.load(Path(testbed_dir) / "classifier", device)


def load_testbed_features(testbed_dir: str | Path, device: str | torch.device = "cpu") -> ModuleFeatures:
    """FID features (128-d pooled conv features) of the testbed classifier, as a FeatureExtractor."""
    net = load_classifier(testbed_dir, device)
    return ModuleFeatures(_FeatureHead(net), net.num_features, name="testbed-digits-classifier").eval()


class PromptAccuracy:
    """Per-image 1.0 when the classifier sees the asked digit and colour, else 0.0 (NaN for foreign prompts).

    ``last_details`` holds digit-only and colour-only accuracy of the last call, so reports can say which
    attribute a sampler loses first (few-step teachers tend to lose the digit shape before the colour).
    """

    name = "prompt_accuracy"
    higher_is_better = True

    def __init__(self, net: DigitColorClassifier, batch_size: int = 512,
                 parse: Callable[[str], tuple[int, int] | None] = parse_caption,
                 form: str = "'a <colour> digit <0-9>'") -> None:  # fmt: skip
        self.net = net
        self.batch_size = batch_size
        self.parse, self.form = parse, form  # caption -> (object, colour) labels; a LCF domain has its own
        self.last_details: dict[str, float] = {}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        parsed = [self.parse(p) for p in prompts]
        if any(p is None for p in parsed):
            bad = next(p for p, q in zip(prompts, parsed, strict=True) if q is None)
            raise ValueError(f"prompt {bad!r} is not a caption this classifier judges ({self.form})")
        want = torch.tensor(parsed)
        dev = next(self.net.parameters()).device
        preds = []
        for i in range(0, len(prompts), self.batch_size):
            d, c = self.net(images[i : i + self.batch_size].to(dev))
            preds.append(torch.stack([d.argmax(1), c.argmax(1)], dim=1).cpu())
        ok = torch.cat(preds) == want
        self.last_details = {"digit_accuracy": ok[:, 0].float().mean().item(),
                             "color_accuracy": ok[:, 1].float().mean().item()}
        return (ok[:, 0] & ok[:, 1]).float()


def load_prompt_accuracy(testbed_dir: str | Path, device: str | torch.device = "cpu") -> PromptAccuracy:
    """The digits testbed's scorer, or a LCF domain's (``classifier/domain.json`` names its caption form)."""
    net = load_classifier(testbed_dir, device)
    marker = Path(testbed_dir) / "classifier" / "domain.json"
    if marker.exists():
        from .domains import SPECS, parse_domain_caption

        domain = json.loads(marker.read_text())["domain"]
        if domain not in SPECS:
            raise ValueError(f"{marker}: domain {domain!r} is not one of {list(SPECS)}")
        return PromptAccuracy(net, parse=partial(parse_domain_caption, domain), form=f"the {domain!r} domain's")
    return PromptAccuracy(net)
