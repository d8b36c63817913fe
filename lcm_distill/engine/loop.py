"""The one training loop for LCD and LCF, on Accelerate.

Per optimiser step (engine/step.py, :class:`TrainStep` over the run's :class:`~lcm_distill.objectives.ConsistencyStep`):
``gradient_accumulation_steps`` micro-batches, gradient clipping, AdamW, LR schedule, target EMA. Around it:
checkpoints (atomic, last K, exact resume incl. data position), SIGTERM/SIGINT -> checkpoint + clean exit,
non-finite losses skipped and counted, validation grids, export of student/target pipeline folders.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data import build_batches
from ..functional import SkippingGrid, num_train_timesteps
from ..models import Models, load_models
from ..objectives import OBJECTIVES, ConsistencyStep
from .checkpoint import RunLayout, list_checkpoints, resolve_resume, save_checkpoint
from .outputs import export_pipelines, run_validation
from .step import TrainStep

logger = logging.getLogger(__name__)


@dataclass
class EngineState:
    """What accelerate does not know: the step counter, failure counters and the data position."""

    step: int = 0
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0
    data: dict | None = None

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


@dataclass
class TrainResult:
    step: int
    status: str  # finished | interrupted
    output_dir: Path
    last_checkpoint: Path | None
    losses: list[float]
    nonfinite_total: int
    skipped_samples: int
    is_main_process: bool = True


class NonFiniteLossError(RuntimeError):
    pass


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the next step boundary."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. a notebook worker): no handler
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        logger.warning("received signal %s: writing a checkpoint at the end of this step, then exiting", signum)
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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
    return torch.optim.AdamW(params, **kwargs)


def build_accelerator(cfg: Config):
    """The run's Accelerator: accumulation, mixed precision, tracker and logging folder from ``cfg``."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    logs = RunLayout(cfg.train.output_dir)
    # accelerate only forms a CPU process group (gloo) when told cpu=True; do so when launched multi-process
    # (torchrun / accelerate launch set WORLD_SIZE) on a machine without CUDA.
    cpu_group = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=cpu_group,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        mixed_precision=cfg.train.mixed_precision,
        log_with=None if cfg.train.report_to == "none" else cfg.train.report_to,
        project_config=ProjectConfiguration(project_dir=str(logs.root), logging_dir=str(logs.logs)),
    )


def preflight(cfg: Config) -> dict:
    """Checks that need the model's scheduler config (a JSON read) but no weights; returns that config.

    The skipping grid must divide the teacher's T (a hub id's config is only known here, a local folder's was
    checked by the config already); an LCF start model trained on another grid N gets a warning.
    """
    from ..models import model_source, read_scheduler_config

    m = cfg.model
    source = model_source(m, OBJECTIVES[cfg.objective.kind].needs_teacher)
    sched = read_scheduler_config(source, m.revision)
    try:
        SkippingGrid(num_train_timesteps(sched), cfg.objective.num_points)
    except ValueError as err:
        raise ConfigError(f"objective.num_points: {err} (scheduler config of {source})") from err
    trained_n = sched.get("original_inference_steps") if source == m.student else None
    if trained_n and trained_n != cfg.objective.num_points:
        logger.warning(
            "model.student was trained on a grid of N=%s points but objective.num_points=%s; inference timesteps "
            "will follow the new grid. Set objective.num_points=%s to keep the original one.",
            trained_n, cfg.objective.num_points, trained_n,
        )  # fmt: skip
    return sched


def load_run_models(cfg: Config) -> Models:
    """The run's networks: :func:`~lcm_distill.models.load_models` given the keys of ``cfg`` it needs."""
    return load_models(cfg.model, with_teacher=OBJECTIVES[cfg.objective.kind].needs_teacher,
                       with_target=cfg.train.ema_decay > 0, seed=cfg.train.seed)  # fmt: skip


def train(cfg: Config, resume: str | None = None, accelerator=None, stop_after: int | None = None) -> TrainResult:
    """Run (or resume) training as configured. ``stop_after`` ends early after that many steps (tests)."""
    from diffusers.optimization import get_scheduler

    preflight(cfg)
    accelerator = accelerator or build_accelerator(cfg)
    tc = cfg.train
    layout = RunLayout(tc.output_dir)
    config_yaml = cfg.to_yaml()
    if accelerator.is_main_process:
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.config.write_text(config_yaml)
    if tc.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    models = load_run_models(cfg).to(accelerator.device)
    models.schedule = models.schedule.to(accelerator.device)
    rank, world = accelerator.process_index, accelerator.num_processes
    B = tc.per_device_batch_size
    batches = build_batches(cfg.data, B, rank, world, tc.seed, models=models)

    params = [p for p in models.student.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    lr_schedule = get_scheduler(
        cfg.optim.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.optim.lr_warmup_steps,
        num_training_steps=tc.max_train_steps,
    )  # fmt: skip  (stepped once per optimiser step by us, not by accelerate, so warm-up means optimiser steps)
    student, optimizer = accelerator.prepare(models.student, optimizer)
    state = EngineState()
    accelerator.register_for_checkpointing(lr_schedule, state)
    if models.target is not None:
        accelerator.register_for_checkpointing(models.target)
    if accelerator.trackers == [] and tc.report_to != "none":
        accelerator.init_trackers("lcm-distill", config={"objective": cfg.objective.kind})

    ckpt = resolve_resume(tc.output_dir, resume)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        batches.position.load_state_dict(_own_data_state(state.data, rank))
        logger.info("resumed from %s at step %d", ckpt, state.step)
    elif resume not in (None, "latest"):
        raise FileNotFoundError(f"--resume {resume}: nothing to resume")

    unwrapped = accelerator.unwrap_model(student)
    consistency = ConsistencyStep(models, cfg.objective, cfg.data.resolution, student=student, unwrapped=unwrapped,
                                  autocast=accelerator.autocast)  # fmt: skip
    train_step = TrainStep(
        accelerator, consistency, optimizer, lr_schedule, params, seed=tc.seed, batch_size=B,
        accumulation=tc.gradient_accumulation_steps, max_grad_norm=cfg.optim.max_grad_norm,
        ema_decay=tc.ema_decay, ema_impl=tc.ema_impl,
    )  # fmt: skip
    losses: list[float] = []
    progress = _progress(accelerator, state.step, tc.max_train_steps)
    data_iter = iter(batches)
    t_last, last_ckpt = time.perf_counter(), (list_checkpoints(tc.output_dir) or [None])[-1]
    status = "finished"
    with _StopFlag() as stop:
        while state.step < tc.max_train_steps:
            result = train_step(state.step, data_iter)
            if not result.finite:
                state.nonfinite_total += 1
                state.nonfinite_in_row += 1
                if state.nonfinite_in_row >= tc.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{state.nonfinite_in_row} steps in a row had a non-finite loss (at step {state.step}); "
                        f"last good checkpoint: {last_ckpt or 'none'}. Lower optim.learning_rate or check the data."
                    )
                continue
            state.nonfinite_in_row = 0
            state.step += 1
            losses.append(result.loss)
            now = time.perf_counter()
            progress.update(1)
            samples_s = B * world * tc.gradient_accumulation_steps / (now - t_last)
            progress.set_postfix(loss=f"{result.loss:.4g}", lr=f"{lr_schedule.get_last_lr()[0]:.2e}",
                                 samples_s=f"{samples_s:.1f}")  # fmt: skip
            t_last = now
            if state.step % tc.log_every == 0 or state.step == 1:
                accelerator.log({"loss": result.loss, "lr": lr_schedule.get_last_lr()[0], **result.logs,
                                 "skipped_samples": batches.position.skipped_samples,
                                 "nonfinite_total": state.nonfinite_total}, step=state.step)  # fmt: skip
            stop_now = _agree(accelerator, stop.requested) or (stop_after is not None and state.step >= stop_after)
            if state.step % tc.checkpoint_every == 0 or stop_now:
                state.data = _data_state(accelerator, batches.position)
                last_ckpt = save_checkpoint(accelerator, tc.output_dir, state.step, tc.checkpoints_keep, config_yaml)
            if tc.validation_every and state.step % tc.validation_every == 0:
                run_validation(accelerator, cfg, models, unwrapped, state.step)
            if stop_now:
                status = "interrupted"
                logger.warning("stopped at step %d; checkpoint %s; resume with --resume latest", state.step, last_ckpt)
                break
    progress.close()
    if status == "finished":
        if last_ckpt is None or last_ckpt.name != layout.checkpoint(state.step).name:
            state.data = _data_state(accelerator, batches.position)
            last_ckpt = save_checkpoint(accelerator, tc.output_dir, state.step, tc.checkpoints_keep, config_yaml)
        run_validation(accelerator, cfg, models, unwrapped, state.step)
        if tc.export:
            export_pipelines(accelerator, cfg, models, unwrapped)
    accelerator.end_training()
    return TrainResult(state.step, status, layout.root, last_ckpt, losses, state.nonfinite_total,
                       batches.position.skipped_samples, accelerator.is_main_process)  # fmt: skip


def _data_state(accelerator, position) -> dict:
    """Every rank's data position: accelerate pickles registered state from the main process only, and streamed
    sources (webdataset, hf_streaming) have a different position per rank. Collective."""
    own = position.state_dict()
    if accelerator.num_processes == 1:
        return own
    from accelerate.utils import gather_object

    return {"per_rank": gather_object([own])}


def _own_data_state(data: dict, rank: int) -> dict:
    return data["per_rank"][min(rank, len(data["per_rank"]) - 1)] if "per_rank" in data else data


def _agree(accelerator, flag: bool) -> bool:
    """Any rank's stop request stops every rank at the same step."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return accelerator.reduce(t, "sum").item() > 0


def _progress(accelerator, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="steps", disable=not accelerator.is_local_main_process,
                dynamic_ncols=True, mininterval=max(1.0, math.log10(max(total, 10))))  # fmt: skip
