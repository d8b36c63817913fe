"""Training loops of the testbed: the VAE, the digit/colour classifier and SD-style teachers (plain DDPM).

Deliberately small, seeded and single-process: they exist so that users can regenerate the committed assets and
see how they were made, not as a second training engine (distillation lives in the engine). Each loop takes the
whole split as tensors in memory (the testbed is ~9k 16x16 images).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..conditioning import Conditioning, TextStack, fixed_time_ids
from ..functional import NoiseSchedule, from_x0_eps
from .digits import DigitsSplit
from .models import ClassifierArch, DigitColorClassifier, UNetArch, VAEArch, build_unet, build_vae

log = logging.getLogger(__name__)


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _batches(num: int, batch_size: int, steps: int, gen: torch.Generator):
    """Index batches from seeded epoch permutations (drop_last semantics, so every batch has ``batch_size``)."""
    perm, pos = torch.randperm(num, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > num:
            perm, pos = torch.randperm(num, generator=gen), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


@dataclass
class VAETrainConfig:
    """Reconstruction (L1 + L2) plus a small KL term: the KL keeps the latent smooth enough for diffusion."""

    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3
    kl_weight: float = 1e-4
    seed: int = 0
    arch: VAEArch = field(default_factory=VAEArch)


def train_vae(images: torch.Tensor, cfg: VAETrainConfig | None = None, progress: Callable | None = None):
    """Train an AutoencoderKL on [0, 1] images; sets ``scaling_factor`` = 1/std of sampled latents (as SD did)."""
    cfg = cfg or VAETrainConfig()
    vae = build_vae(cfg.arch, seed=cfg.seed).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all = images * 2.0 - 1.0
    for step, idx in enumerate(_batches(len(x_all), cfg.batch_size, cfg.steps, gen)):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg.steps, cfg.lr, 100)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = rec_loss + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(step, {"rec": rec_loss.item(), "kl": kl.item()})
    vae.eval().requires_grad_(False)
    mean, std = encode_posterior(vae, images)
    z = mean + std * torch.randn(mean.shape, generator=gen)
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


@torch.no_grad()
def encode_posterior(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of [0, 1] images (unscaled latents), batched."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        post = vae.encode(images[i : i + batch_size] * 2.0 - 1.0).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


@dataclass
class ClassifierTrainConfig:
    """Augmentations (shifts, noise, blur, brightness) make the classifier judge generated images, not only scans."""

    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    arch: ClassifierArch = field(default_factory=ClassifierArch)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    shifts = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=shifts, dims=(2, 3))
    blur = torch.rand(n, 1, 1, 1, generator=gen) < 0.3
    x = torch.where(blur, F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1), x)
    x = x * (0.7 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen))
    x = x + 0.05 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


def train_classifier(data: DigitsSplit, cfg: ClassifierTrainConfig | None = None) -> DigitColorClassifier:
    """Train the digit/colour classifier (also the domain FID feature network) on a split."""
    cfg = cfg or ClassifierTrainConfig()
    torch.manual_seed(cfg.seed)
    net = DigitColorClassifier(cfg.arch).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    for step, idx in enumerate(_batches(len(data.images), cfg.batch_size, cfg.steps, gen)):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg.steps, cfg.lr, 50)
        d_logits, c_logits = net(_augment(data.images[idx], gen))
        loss = F.cross_entropy(d_logits, data.digits[idx]) + F.cross_entropy(c_logits, data.colors[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def classifier_accuracy(net: DigitColorClassifier, data: DigitsSplit, batch_size: int = 512) -> dict[str, float]:
    """Digit, colour and joint (both right) accuracy on a split."""
    d_ok, c_ok = [], []
    for i in range(0, len(data.images), batch_size):
        d, c = net(data.images[i : i + batch_size])
        d_ok.append(d.argmax(1) == data.digits[i : i + batch_size])
        c_ok.append(c.argmax(1) == data.colors[i : i + batch_size])
    d_all, c_all = torch.cat(d_ok), torch.cat(c_ok)
    return {"digit": d_all.float().mean().item(), "color": c_all.float().mean().item(),
            "joint": (d_all & c_all).float().mean().item()}


@dataclass
class TeacherTrainConfig:
    """Standard DDPM training (Ho et al. 2020) on VAE latents with caption dropout for classifier-free guidance.

    prediction_type: "epsilon" (like SD 2.1-base) or "v_prediction" (like SD 2.1 768). caption_dropout: share of
    examples trained on the empty prompt "" so one network also models p(x) (Ho & Salimans 2022); ~10% as in SD.
    ema_decay: the saved teacher is the EMA of the weights (standard for diffusion models; visibly better samples).
    train_text_encoder: train the CLIP text encoder jointly (same optimiser, EMA too). A random frozen encoder
    carries "digit 7" vs "digit 2" as a small perturbation of one token state (distance ~2 at norm 5.7) and the
    teacher learned colour but ignored digits (27% digit accuracy at g=5 after 1,500 steps); joint training stands
    in for CLIP pretraining, which is what makes SD's tokens distinctive. Distillation then freezes it, as for SD.
    """

    prediction_type: str = "epsilon"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    train_text_encoder: bool = True
    seed: int = 0
    arch: UNetArch = field(default_factory=UNetArch)


def caption_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids (N, 77), padded to max length as SD pipelines do."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_captions(text_encoder, tokenizer, captions: list[str]) -> torch.Tensor:
    """Last hidden states (N, 77, D) of the text encoder (what the pipelines feed the UNet)."""
    return text_encoder(caption_ids(tokenizer, captions))[0]


def train_teacher(
    vae,
    text_encoder,
    tokenizer,
    scheduler_config: dict,
    data: DigitsSplit,
    cfg: TeacherTrainConfig | None = None,
    progress: Callable | None = None,
    init_unet: nn.Module | None = None,
    text_encoder_2: nn.Module | None = None,
    tokenizer_2=None,
):
    """Train a teacher UNet (and, if asked, the text encoder); returns their EMA copies (eval mode, no grad).

    ``init_unet``: fine-tune a copy of this UNet instead of a fresh one (a derivative of a teacher in another style,
    for the LCM-LoRA universality benchmark); cfg.arch is then ignored.
    ``text_encoder_2`` / ``tokenizer_2``: an SDXL-shaped teacher (cfg.arch with "text_time" added conditioning). It
    is conditioned through the same :class:`TextStack` as the engine (penultimate states of both encoders, the
    second's pooled embedding, time ids of the uncropped square images) and drops captions to zeros, the SDXL
    pipeline's unconditional branch. Its encoders stay frozen (pass already-trained ones: see train_text_encoder).
    """
    cfg = cfg or TeacherTrainConfig()
    dual = text_encoder_2 is not None
    if dual and cfg.train_text_encoder:
        raise ValueError("an SDXL testbed teacher keeps its text encoders frozen: set train_text_encoder=False and "
                         "pass trained encoders (python -m lcm_distill.testbed.build uses the SD teachers')")
    if dual != bool(cfg.arch.addition_time_embed_dim) and init_unet is None:
        raise ValueError("text_encoder_2 and cfg.arch.addition_time_embed_dim go together (SDXL) or not at all")
    schedule = NoiseSchedule.from_config(scheduler_config, cfg.prediction_type)
    mean, std = encode_posterior(vae, data.images)
    scale = float(vae.config.scaling_factor)
    prompts = sorted(set(data.captions))
    ids = caption_ids(tokenizer, [*prompts, ""])  # last row: the unconditional "" prompt
    caption_idx = torch.tensor([prompts.index(c) for c in data.captions])
    uncond = len(prompts)

    unet = (copy.deepcopy(init_unet).float() if init_unet is not None else build_unet(cfg.arch, seed=cfg.seed)).train()
    unet.requires_grad_(True)
    text_encoder = copy.deepcopy(text_encoder).requires_grad_(cfg.train_text_encoder).train(cfg.train_text_encoder)
    trained = [unet, text_encoder] if cfg.train_text_encoder else [unet]
    emas = [copy.deepcopy(m).eval().requires_grad_(False) for m in trained]
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        if dual:  # rows: the prompts, then the unconditional branch (zeros for SDXL)
            stack = TextStack.of(tokenizer, text_encoder, tokenizer_2, text_encoder_2)
            frozen_table = stack.encode(prompts).cat(stack.unconditional(1))
        else:
            frozen_table = None if cfg.train_text_encoder else Conditioning(text_encoder(ids)[0])
    size = int(data.images.shape[-1])
    t0 = time.time()
    for step, idx in enumerate(_batches(len(mean), cfg.batch_size, cfg.steps, gen)):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        b = len(idx)
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, schedule.num_train_timesteps, (b,), generator=gen)
        drop = torch.rand(b, generator=gen) < cfg.caption_dropout
        which = torch.where(drop, torch.full_like(caption_idx[idx], uncond), caption_idx[idx])
        # 61 distinct prompts: encode each once per step and gather (same gradients as encoding the batch)
        table = frozen_table if frozen_table is not None else Conditioning(text_encoder(ids)[0])
        cond = Conditioning(table.hidden[which], None if table.pooled is None else table.pooled[which],
                            fixed_time_ids(b, size) if dual else None)  # fmt: skip
        alpha, sigma = schedule.alpha_sigma(t)
        x_t = alpha * x0 + sigma * noise
        target = from_x0_eps(x0, noise, alpha, sigma, cfg.prediction_type)
        pred = unet(x_t, t, **cond.unet_kwargs()).sample
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, model in zip(emas, trained, strict=True):
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
        if progress is not None:
            progress(step, {"loss": loss.item(), "elapsed_s": time.time() - t0})
    text_out = emas[1] if cfg.train_text_encoder else text_encoder.eval().requires_grad_(False)
    return emas[0], text_out
