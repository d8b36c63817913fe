"""A run's working set, built once: the one set-up that the training loop and every benchmark use.

Order matters and is written here only: models (moved with their noise schedule) -> this rank's batches -> sharding
(fsdp2: before the optimiser sees the parameters) -> AdamW -> LR schedule -> ``prepare`` (DDP / DeepSpeed) ->
the objective's :class:`~lcm_distill.objectives.ConsistencyStep` -> the engine's :class:`TrainStep`. Resuming (which
reads state into these objects in place) is the loop's business, after this.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config
from ..data import build_batches
from ..models import Models, load_models
from ..objective_kinds import OBJECTIVE_KINDS
from ..objectives import ConsistencyStep
from .parallel import Parallel
from .preflight import check_resolution
from .step import TrainStep

# optim.adamw_impl -> torch.optim.AdamW's keyword: torch picks its per-tensor loop on CPU (foreach only when every
# parameter is on CUDA), which measured 5-30x slower than the fused kernel for a UNet's ~200 tensors on CPU
# (benchmarks/RESULTS.md). Same update rule; the kernels round differently in the last bits.
ADAMW_IMPLS: dict[str, dict[str, bool]] = {"fused": {"fused": True}, "foreach": {"foreach": True},
                                           "loop": {"foreach": False}}  # fmt: skip


def build_optimizer(params, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (or bitsandbytes' 8-bit AdamW with optim.use_8bit_adam) with the optim.* settings."""
    o = cfg.optim
    kwargs = dict(
        lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), weight_decay=o.weight_decay, eps=o.adam_epsilon
    )
    if o.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError("optim.use_8bit_adam=true needs bitsandbytes: pip install bitsandbytes.") from err
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs, **ADAMW_IMPLS[o.adamw_impl])


def load_run_models(cfg: Config) -> Models:
    """The run's networks: :func:`~lcm_distill.models.load_models` given the keys of ``cfg`` it needs."""
    return load_models(cfg.model, with_teacher=OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher,
                       with_target=cfg.train.ema_decay > 0, seed=cfg.train.seed)  # fmt: skip


@dataclass
class RunSetup:
    """What a run trains with. ``student`` is the prepared (wrapped or sharded) student; ``models.student`` the
    module inside it; ``step.consistency`` the objective bound to both."""

    models: Models
    batches: object  # data.Batches: this rank's endless, resumable batch iterator
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: object
    step: TrainStep


def set_up_run(cfg: Config, parallel: Parallel) -> RunSetup:
    """Build the run's working set on ``parallel.accelerator``'s device and ranks (collective under fsdp2/zero2)."""
    from diffusers.optimization import get_scheduler

    acc, tc = parallel.accelerator, cfg.train
    if tc.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    models = load_run_models(cfg).to(acc.device)  # Models.to moves the noise schedule too
    check_resolution(cfg.data.resolution, models.vae_scale_factor)  # hub models: known only now
    batches = build_batches(cfg.data, tc.per_device_batch_size, acc.process_index, acc.num_processes, tc.seed,
                            models=models)  # fmt: skip
    parallel.shard(models)
    params = [p for p in models.student.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    lr_schedule = get_scheduler(cfg.optim.lr_scheduler, optimizer, num_warmup_steps=cfg.optim.lr_warmup_steps,
                                num_training_steps=tc.max_train_steps)  # fmt: skip
    # (stepped once per optimiser step by TrainStep, not by accelerate, so warm-up means optimiser steps)
    student, optimizer = parallel.prepare(models.student, optimizer)
    consistency = ConsistencyStep(models, cfg.objective, cfg.data.resolution, student=student,
                                  unwrapped=parallel.unwrap(student), autocast=parallel.autocast,
                                  sdxl_time_ids=cfg.data.sdxl_time_ids)  # fmt: skip
    step = TrainStep(
        acc, consistency, optimizer, lr_schedule, params, parallel=parallel, seed=tc.seed,
        batch_size=tc.per_device_batch_size, accumulation=tc.gradient_accumulation_steps,
        max_grad_norm=cfg.optim.max_grad_norm, ema_decay=tc.ema_decay, ema_impl=tc.ema_impl,
        ema_schedule=tc.ema_schedule,
    )  # fmt: skip
    return RunSetup(models, batches, student, optimizer, lr_schedule, step)
