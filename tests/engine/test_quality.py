"""The in-training quality signal (engine/quality.py): FID of fixed prompts against held-out images, logged, a sharp
rise warned about, the best step's weights kept in best/ and exported with train.export_from=best."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lcm_distill.config import ConfigError
from lcm_distill.engine import train
from lcm_distill.engine.quality import QualityProbe


def _quality(data_dir, *more):
    return ("train.quality_every=2", f"train.quality_reference={data_dir}", "train.quality_images=4",
            "train.quality_steps=1", "train.quality_features=inception", *more)  # fmt: skip


def test_probe_measures_distance_to_the_reference(data_dir):
    """FID of images equal to the reference is ~0; of noise it is large (the probe compares with data)."""
    from lcm_distill.evaluation.features import InceptionV3Features, extract_features
    from lcm_distill.evaluation.imagefolder import read_imagefolder

    ref, captions = read_imagefolder(data_dir, "test")
    extractor = InceptionV3Features("cpu")
    probe = QualityProbe(captions[:8], extract_features(extractor, ref[:8]), extractor, 1, 1.0, 16)

    def pipe_of(images):
        def pipe(prompt, **kw):
            return SimpleNamespace(images=images[: len(prompt)].permute(0, 2, 3, 1).numpy())

        return pipe

    same = probe.measure(pipe_of(ref[:8]))
    noise = probe.measure(pipe_of(torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))))
    assert same < 1e-3 < 10 < noise


def test_best_is_tracked_warned_about_and_exported(make_cfg, data_dir, monkeypatch, caplog):
    """Scripted signal 3, 1, 5 at steps 2, 4, 6: best is step 4, step 6 (> 2x best) is warned about, and
    export_from=best writes step 4's weights (saved in best/), not step 6's."""
    from safetensors.torch import load_file

    values = iter([3.0, 1.0, 5.0])
    monkeypatch.setattr(QualityProbe, "measure", lambda self, pipe: next(values))
    cfg = make_cfg(*_quality(data_dir, "train.export_from=best"), "train.max_train_steps=6", "train.export=true",
                   "train.ema_decay=0")  # fmt: skip
    with caplog.at_level(logging.WARNING):
        result = train(cfg)
    assert result.quality == {"last": 5.0, "last_step": 6, "best": 1.0, "best_step": 4}
    assert "quality_fid 5 at step 6 is more than 2x the best 1" in caplog.text
    assert "exporting the weights of step 4" in caplog.text
    best = json.loads((result.output_dir / "best" / "best.json").read_text())
    assert best["step"] == 4 and best["value"] == 1.0
    saved = load_file(str(result.output_dir / "best" / "student.safetensors"))
    exported = load_file(str(result.output_dir / "student" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(saved[k], exported[k]) for k in exported)
    last = load_file(str(result.last_checkpoint / "model.safetensors"))
    assert any(not torch.equal(last[k], exported[k]) for k in exported if k in last)
    summary = json.loads((result.output_dir / "run_summary.json").read_text())
    assert summary["quality"]["best_step"] == 4 and summary["quality"]["exported"] == "best"


def test_lora_ema_run_measures_the_target_and_keeps_adapters_only(make_cfg, data_dir, monkeypatch):
    """The signal judges the exported network - for LoRA with an EMA, the EMA adapters swapped into the student -
    and best/ keeps the adapters, not a copy of the base UNet."""
    from safetensors.torch import load_file

    seen = []
    real = QualityProbe.measure

    def measure(self, pipe):
        seen.append([p.detach().clone() for n, p in pipe.unet.named_parameters() if "lora_" in n])
        return real(self, pipe)

    monkeypatch.setattr(QualityProbe, "measure", measure)
    cfg = make_cfg(*_quality(data_dir), "model.lora.enabled=true", "model.lora.rank=4", "train.ema_decay=0.9",
                   "train.max_train_steps=3", "train.export=true", "optim.learning_rate=1e-2")  # fmt: skip
    result = train(cfg)
    assert len(seen) == 2 and np.isfinite(result.quality["last"])  # steps 2 and 3 (the final weights)
    best = seen[[2, 3].index(result.quality["best_step"])]
    ema = load_file(str(result.output_dir / "best" / "target.safetensors"))
    online = load_file(str(result.output_dir / "best" / "student.safetensors"))
    assert all("lora_" in k for k in online)  # the base UNet is not copied
    ema_tensors = [ema[f"ema.{i}"] for i in range(len(ema))]
    assert all(torch.equal(a, b) for a, b in zip(best, ema_tensors, strict=True))  # the EMA adapters were judged
    assert any(not torch.equal(a, b) for a, b in zip(best, online.values(), strict=True))


@pytest.mark.parametrize(
    ("over", "message"),
    [(("train.export_from=best",), r"train\.export_from=best needs"),
     (("train.quality_every=5",), r"train\.quality_every=5 needs train\.quality_reference"),
     (("train.quality_every=5", "train.quality_reference=x", "train.quality_images=1"), r"quality_images >= 2"),
     (("train.quality_features=clip",), r"train\.quality_features")],
)
def test_quality_settings_are_checked(make_cfg, over, message):
    with pytest.raises(ConfigError, match=message):
        make_cfg(*over)


def test_missing_reference_is_a_preflight_error(make_cfg, tmp_path):
    from lcm_distill.engine.preflight import preflight

    cfg = make_cfg("train.quality_every=5", f"train.quality_reference={tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match=r"train\.quality_reference=.*metadata\.jsonl"):
        preflight(cfg, dry_run=True)


def test_auto_features_are_the_testbed_classifier_on_the_digits_testbed(tmp_path):
    from lcm_distill.engine.quality import _extractor

    (tmp_path / "testbed.json").write_text("{}")
    never = lambda device: pytest.fail("Inception was built for a testbed reference")  # noqa: E731
    assert _extractor("auto", str(tmp_path), "cpu", never).name == "testbed-digits-classifier"
    assert _extractor("testbed", "elsewhere", "cpu", never).name == "testbed-digits-classifier"
    assert _extractor("inception", str(tmp_path), "cpu", lambda device: "inception") == "inception"
