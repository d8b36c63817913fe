"""FID/KID on cached features (torchmetrics) and CLIP score (open_clip), checked against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from lcm_distill.evaluation import ClipScoreConfig, ClipScorer, extract_features, fid_from_features, kid_from_features


def _images(n: int, seed: int, bright: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * bright).clamp(0, 1)


def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_identical_sets_is_zero_and_different_sets_positive(tiny_extractor):
    real = extract_features(tiny_extractor, _images(200, 0))
    same = extract_features(tiny_extractor, _images(200, 0))
    other = extract_features(tiny_extractor, _images(200, 1, bright=0.6))
    assert abs(fid_from_features(real, same)) < 1e-4
    d = fid_from_features(real, other)
    assert d > 1e-2
    assert d == pytest.approx(_reference_fid(real.numpy(), other.numpy()), rel=1e-4, abs=1e-6)


def test_fid_grows_with_the_shift(tiny_extractor):
    real = extract_features(tiny_extractor, _images(200, 0))
    near = extract_features(tiny_extractor, _images(200, 1, bright=0.9))
    far = extract_features(tiny_extractor, _images(200, 1, bright=0.5))
    assert fid_from_features(real, near) < fid_from_features(real, far)


def test_kid_near_zero_for_same_distribution_and_seeded(tiny_extractor):
    real = extract_features(tiny_extractor, _images(150, 0))
    same_dist = extract_features(tiny_extractor, _images(150, 2))
    other = extract_features(tiny_extractor, _images(150, 1, bright=0.5))
    k_same, _ = kid_from_features(real, same_dist, subsets=20, subset_size=100)
    k_other, k_std = kid_from_features(real, other, subsets=20, subset_size=100)
    assert abs(k_same) < 0.1 * k_other
    assert k_std >= 0
    assert kid_from_features(real, other, subsets=20, subset_size=100) == (k_other, k_std)


def test_feature_errors(tiny_extractor):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        extract_features(tiny_extractor, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(torch.rand(1, 8), torch.rand(5, 8))
    with pytest.raises(ValueError, match="equal D"):
        fid_from_features(torch.rand(5, 8), torch.rand(5, 4))


def test_clip_score_random_model_matches_formula(tiny_clip_name):
    scorer = ClipScorer(ClipScoreConfig(tiny_clip_name, pretrained=None, batch_size=3))
    images = _images(5, 3)
    prompts = ["a red digit 1", "a photo of a cat", "x", "a blue digit 9", "the same prompt"]
    scores = scorer(images, prompts)
    assert scores.shape == (5,)
    assert torch.all((scores >= 0) & (scores <= 100))
    with torch.no_grad():
        fi = torch.nn.functional.normalize(scorer.model.encode_image(scorer._preprocess(images)), dim=-1)
        ft = torch.nn.functional.normalize(scorer.model.encode_text(scorer.tokenizer(prompts)), dim=-1)
    expected = (100 * (fi * ft).sum(-1)).clamp(min=0)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scorer(images, prompts), scores)  # deterministic
    assert scorer._preprocess(torch.rand(2, 3, 20, 48)).shape == (2, 3, 32, 32)  # resize + centre crop
    with pytest.raises(ValueError, match="prompts"):
        scorer(images, prompts[:2])
