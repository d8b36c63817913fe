"""Held-out consistency loss: the training objective on data the run never saw, with fixed noise.

Used to tell whether LCF (or LCD) generalises: the same batches, timesteps and noise are drawn for every model
evaluated (seeded by ``seed`` and the batch index), so two numbers differ only through the networks.
"""

from __future__ import annotations

import contextlib

import torch

from ..config import DataConfig, ObjectiveConfig
from ..data import ResumableBatches, build_dataset
from ..functional import SkippingGrid
from ..models import Models
from ..objectives import batch_loss, draw_step_noise, step_generator


@torch.no_grad()
def heldout_loss(
    models: Models,
    unet: torch.nn.Module,
    data: DataConfig,
    objective: ObjectiveConfig,
    num_batches: int = 4,
    batch_size: int = 8,
    seed: int = 1234,
    target: torch.nn.Module | None = None,
) -> float:
    """Mean loss of ``unet`` (target defaults to ``unet`` itself: self-consistency) over ``num_batches`` batches."""
    batches = iter(ResumableBatches(build_dataset(data, seed), batch_size, seed=seed))
    grid = SkippingGrid(models.schedule.num_train_timesteps, objective.num_points)
    shape = models.latent_shape(data.resolution)
    teacher_ctx = (lambda: models.teacher_unet(unet)) if objective.kind == "lcd" else None
    was_training = unet.training
    unet.eval()
    losses = []
    for i in range(num_batches):
        noise = draw_step_noise(step_generator(seed, i), batch_size, shape, grid, objective)
        loss = batch_loss(models, next(batches), noise, unet, target or unet, teacher_ctx, objective,
                          contextlib.nullcontext)  # fmt: skip
        if loss is not None:
            losses.append(float(loss))
    unet.train(was_training)
    if not losses:
        raise ValueError(f"no readable held-out sample in {data.dataset}.")
    return sum(losses) / len(losses)
