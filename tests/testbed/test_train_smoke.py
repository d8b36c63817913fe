"""The asset-training loops run end to end on a handful of images (the full runs are the build command's job)."""

from __future__ import annotations

import json

import pytest
import torch

from lcm_distill.testbed import DigitsSplit, UNetArch, VAEArch
from lcm_distill.testbed.build import _merge_manifest
from lcm_distill.testbed.train import (
    ClassifierTrainConfig,
    TeacherTrainConfig,
    VAETrainConfig,
    train_classifier,
    train_teacher,
    train_vae,
)


@pytest.fixture(scope="module")
def small(test_split):
    idx = torch.arange(0, 48)
    return DigitsSplit(test_split.images[idx], [test_split.captions[i] for i in idx], test_split.digits[idx],
                       test_split.colors[idx], [test_split.file_names[i] for i in idx])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_train_vae_and_teacher_smoke(small, tmp_path, prediction_type):
    from lcm_distill.testing import build_clip_tokenizer, tiny_scheduler_config, tiny_text_encoder

    vae = train_vae(small.images, VAETrainConfig(steps=2, batch_size=8, arch=VAEArch(block_out_channels=(8, 16))))
    assert vae.config.scaling_factor > 0 and not any(p.requires_grad for p in vae.parameters())
    text = tiny_text_encoder(1000, 0)
    before = text.get_input_embeddings().weight.clone()
    tok = build_clip_tokenizer(tmp_path, 1000)
    cfg = TeacherTrainConfig(prediction_type=prediction_type, steps=3, batch_size=8, warmup=1, ema_decay=0.5,
                             arch=UNetArch(block_out_channels=(16, 32), attention_head_dim=(2, 2)))
    losses = []
    unet, text_out = train_teacher(vae, text, tok, tiny_scheduler_config(prediction_type), small, cfg,
                                   lambda step, stats: losses.append(stats["loss"]))
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not unet.training and not any(p.requires_grad for p in text_out.parameters())
    assert not torch.equal(text_out.get_input_embeddings().weight, before)  # trained jointly
    assert torch.equal(text.get_input_embeddings().weight, before)  # caller's copy untouched
    tuned, _ = train_teacher(vae, text_out, tok, tiny_scheduler_config(prediction_type), small,
                             TeacherTrainConfig(prediction_type=prediction_type, steps=2, batch_size=8, warmup=1,
                                                ema_decay=0.5, train_text_encoder=False), init_unet=unet)  # fmt: skip
    start = dict(unet.named_parameters())
    moved = max((p - start[n]).abs().max().item() for n, p in tuned.named_parameters())
    assert 0 < moved < 1.0 and tuned.config == unet.config  # fine-tuned from it, not rebuilt
    assert not any(p.requires_grad for p in unet.parameters())  # the caller's UNet untouched


def test_train_classifier_smoke(small):
    net = train_classifier(small, ClassifierTrainConfig(steps=2, batch_size=16))
    d, c = net(small.images[:4])
    assert d.shape == (4, 10) and c.shape == (4, 6) and net.features(small.images[:4]).shape == (4, 128)


def test_manifest_merge_keeps_other_entries(tmp_path):
    path = tmp_path / "manifest.json"
    _merge_manifest(path, {"teacher-eps": {"train": 1}}, {"teacher-eps": 5.0})
    _merge_manifest(path, {"teacher-v": {"train": 2}, "teacher-eps": {"ddim_check": [1]}}, {"teacher-v": 6.0})
    m = json.loads(path.read_text())
    assert m["teacher-eps"] == {"train": 1, "ddim_check": [1]} and m["teacher-v"] == {"train": 2}
    assert m["seconds"] == {"teacher-eps": 5.0, "teacher-v": 6.0}


def test_sdxl_teacher_trains_through_the_engines_conditioning(small, tmp_path):
    """teacher-xl's loop: two frozen encoders through TextStack (penultimate states side by side, pooled embedding),
    "text_time" time ids of the uncropped images, zeros as the dropped caption; the saved folder is SDXL to the
    family rule and samples in stock StableDiffusionXLPipeline."""
    from diffusers import StableDiffusionXLPipeline

    from lcm_distill.families import family_of
    from lcm_distill.testbed.build import save_teacher
    from lcm_distill.testbed.models import SDXL_ARCH
    from lcm_distill.testing import build_clip_tokenizer, tiny_scheduler_config, tiny_text_encoder

    vae = train_vae(small.images, VAETrainConfig(steps=1, batch_size=8, arch=VAEArch(block_out_channels=(8, 16))))
    first, second = tiny_text_encoder(1000, 0), tiny_text_encoder(1000, 1, with_projection=True)
    tok = build_clip_tokenizer(tmp_path, 1000)
    cfg = TeacherTrainConfig(steps=2, batch_size=8, warmup=1, ema_decay=0.5, arch=SDXL_ARCH, train_text_encoder=False)
    losses = []
    unet, _ = train_teacher(vae, first, tok, tiny_scheduler_config("epsilon"), small, cfg,
                            lambda step, stats: losses.append(stats["loss"]), text_encoder_2=second, tokenizer_2=tok)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert unet.config.addition_embed_type == "text_time" and unet.config.cross_attention_dim == 64
    folder = save_teacher(tmp_path / "xl", vae, first, tok, unet, "epsilon", second)
    assert family_of(json.loads((folder / "unet" / "config.json").read_text())).name == "sdxl"
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red digit 7", num_inference_steps=2, output_type="pt").images
    assert image.shape == (1, 3, 16, 16) and torch.isfinite(image).all()
    with pytest.raises(ValueError, match="train_text_encoder=False"):
        train_teacher(vae, first, tok, tiny_scheduler_config("epsilon"), small,
                      TeacherTrainConfig(steps=1, arch=SDXL_ARCH), text_encoder_2=second, tokenizer_2=tok)
    with pytest.raises(ValueError, match="go together"):
        train_teacher(vae, first, tok, tiny_scheduler_config("epsilon"), small,
                      TeacherTrainConfig(steps=1, arch=SDXL_ARCH, train_text_encoder=False))
