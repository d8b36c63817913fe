"""End-to-end runs of the training engine on the tiny kit (CPU)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from lcm_distill.engine import NonFiniteLossError, ema_update, list_checkpoints, load_run_models, train


def _unet_weights(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_short_run_exports_folders_that_stock_diffusers_loads(make_cfg):
    from diffusers import LatentConsistencyModelPipeline

    cfg = make_cfg("train.export=true", "train.validation_prompts=['a red square']", "train.validation_steps=[1,2]",
                   "train.ema_decay=0.5")  # fmt: skip
    result = train(cfg)
    out = result.output_dir
    assert result.status == "finished" and result.step == 2 and len(result.losses) == 2
    assert (out / "config.resolved.yaml").read_text().startswith("model:")
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-00000002"]
    assert sorted(p.name for p in (out / "validation").iterdir()) == [
        "step-00000002-student.png", "step-00000002-target.png"]  # fmt: skip
    for name in ("student", "target"):
        pipe = LatentConsistencyModelPipeline.from_pretrained(out / name)
        assert pipe.scheduler.config.original_inference_steps == 50
        img = pipe("a red square", num_inference_steps=2, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images  # fmt: skip
        assert img.shape == (1, 16, 16, 3) and (out / name / "README.md").exists()


def test_target_moves_by_exactly_the_ema_rule(make_cfg):
    mu = 0.75
    cfg = make_cfg("train.max_train_steps=1", f"train.ema_decay={mu}", "train.export=true")
    initial = load_run_models(cfg).student.state_dict()
    out = train(cfg).output_dir
    student, target = _unet_weights(out / "student"), _unet_weights(out / "target")
    moved = 0
    for name, theta0 in initial.items():
        expected = torch.lerp(theta0, student[name], 1 - mu)
        torch.testing.assert_close(target[name], expected, atol=1e-7, rtol=1e-6)
        moved += int(not torch.equal(student[name], theta0))
    assert moved > 0  # the student did take a step


def test_ema_update_edge_cases():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    before = [p.clone() for p in a.parameters()]
    ema_update(a, b, 1.0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), before, strict=True))
    ema_update(a, b, 0.0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_resume_reproduces_the_uninterrupted_run_bitwise(make_cfg):
    over = ("train.max_train_steps=4", "train.export=true", "train.ema_decay=0.9", "train.checkpoint_every=2",
            "optim.lr_warmup_steps=2", "optim.lr_scheduler=linear")  # fmt: skip
    full = train(make_cfg(*over, out="full"))
    part = make_cfg(*over, out="part")
    first = train(part, stop_after=2)
    assert first.status == "interrupted" and first.step == 2
    second = train(part, resume="latest")
    assert second.step == 4
    assert second.losses == full.losses[2:]
    for name in ("student", "target"):
        a, b = _unet_weights(full.output_dir / name), _unet_weights(second.output_dir / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_corrupt_images_are_skipped_and_counted(make_cfg, corrupt_data_dir):
    result = train(
        make_cfg(f"data.dataset={corrupt_data_dir}", "train.per_device_batch_size=4", "train.max_train_steps=4")
    )
    assert result.status == "finished" and result.skipped_samples >= 1
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_non_finite_losses_are_skipped_then_stop_the_run(make_cfg, monkeypatch):
    import pytest

    from lcm_distill import objectives

    monkeypatch.setattr(objectives, "consistency_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(NonFiniteLossError, match="last good checkpoint: none") as err:
        train(make_cfg("train.max_nonfinite_steps=3", "train.max_train_steps=10"))
    assert "VAE" not in str(err.value)  # finite latents: the VAE is not blamed


def test_non_finite_vae_latents_are_named_as_the_cause(make_cfg, monkeypatch, caplog):
    """An overflowing VAE (SDXL's in fp16) gives NaN latents: the skipped steps say so, and the error names
    model.frozen_dtype / model.vae, not the learning rate alone."""
    import pytest

    from lcm_distill import models

    real = models.encode_images

    def overflowing(vae, pixel_values):
        mean, std = real(vae, pixel_values)
        return mean.masked_fill(torch.zeros_like(mean, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True),
                                float("nan")), std  # fmt: skip

    monkeypatch.setattr(models, "encode_images", overflowing)
    with pytest.raises(NonFiniteLossError, match=r"In 2 of them the VAE's latents were non-finite.*model\.vae"):
        train(make_cfg("train.max_nonfinite_steps=2", "train.max_train_steps=10"))
    assert "the VAE gave non-finite latents" in caplog.text


def test_gradient_accumulation_equals_the_same_global_batch(make_cfg):
    over = ("train.max_train_steps=2", "train.export=true", "optim.adam_epsilon=1.0", "optim.learning_rate=0.05")
    big = train(make_cfg(*over, "train.per_device_batch_size=4", out="big"))
    acc = train(make_cfg(*over, "train.per_device_batch_size=2", "train.gradient_accumulation_steps=2", out="acc"))
    for a, b in zip(big.losses, acc.losses, strict=True):
        assert abs(a - b) < 1e-6 * max(1.0, abs(a))
    x, y = _unet_weights(big.output_dir / "student"), _unet_weights(acc.output_dir / "student")
    assert max((x[k] - y[k]).abs().max().item() for k in x) < 1e-6
