"""The one training loop for LCD and LCF, on Accelerate.

Per optimiser step: ``gradient_accumulation_steps`` micro-batches (each: VAE posterior sample, text embeddings,
one consistency step from lcm_distill.objectives), gradient clipping, AdamW, LR schedule, target EMA. Around it:
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

from ..config import Config
from ..data import build_batches
from ..functional import SkippingGrid
from ..models import Models, load_models
from ..objectives import batch_loss, draw_step_noise, step_generator
from .checkpoint import list_checkpoints, resolve_resume, save_checkpoint
from .ema import ema_update
from .outputs import export_pipelines, run_validation

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


def _optimizer(params, cfg: Config) -> torch.optim.Optimizer:
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


def _accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out = Path(cfg.train.output_dir)
    # accelerate only forms a CPU process group (gloo) when told cpu=True; do so when launched multi-process
    # (torchrun / accelerate launch set WORLD_SIZE) on a machine without CUDA.
    cpu_group = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=cpu_group,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        mixed_precision=cfg.train.mixed_precision,
        log_with=None if cfg.train.report_to == "none" else cfg.train.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )


def train(cfg: Config, resume: str | None = None, accelerator=None, stop_after: int | None = None) -> TrainResult:
    """Run (or resume) training as configured. ``stop_after`` ends early after that many steps (tests)."""
    from diffusers.optimization import get_scheduler

    accelerator = accelerator or _accelerator(cfg)
    tc = cfg.train
    out = Path(tc.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.resolved.yaml").write_text(cfg.to_yaml())
    if tc.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    models: Models = load_models(cfg).to(accelerator.device)
    grid = SkippingGrid(models.schedule.num_train_timesteps, cfg.objective.num_points)
    models.schedule = models.schedule.to(accelerator.device)
    rank, world = accelerator.process_index, accelerator.num_processes
    B = tc.per_device_batch_size
    batches = build_batches(cfg.data, B, rank, world, tc.seed, models=models)

    params = [p for p in models.student.parameters() if p.requires_grad]
    optimizer = _optimizer(params, cfg)
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
    target = models.target if models.target is not None else unwrapped
    teacher_ctx = (lambda: models.teacher_unet(unwrapped)) if cfg.objective.kind == "lcd" else None
    latent_shape = models.latent_shape(cfg.data.resolution)
    accum = tc.gradient_accumulation_steps
    losses: list[float] = []
    progress = _progress(accelerator, state.step, tc.max_train_steps)
    data_iter = iter(batches)
    t_last, last_ckpt = time.perf_counter(), (list_checkpoints(tc.output_dir) or [None])[-1]
    status = "finished"
    with _StopFlag() as stop:
        while state.step < tc.max_train_steps:
            step_losses, bad = [], False
            # One draw for the step's whole global batch (accum x world x B), sliced like the data: any split of
            # the same global batch over processes and accumulation sees the same samples with the same noise.
            step_noise = draw_step_noise(
                step_generator(tc.seed, state.step), accum * world * B, latent_shape, grid, cfg.objective
            )
            for micro in range(accum):
                batch = next(data_iter)
                lo = (micro * world + rank) * B
                noise = step_noise.slice(lo, lo + B).to(accelerator.device)
                with accelerator.accumulate(student):
                    loss = batch_loss(models, batch, noise, student, target, teacher_ctx, cfg.objective,
                                      accelerator.autocast)  # fmt: skip
                    finite = torch.tensor(
                        [0.0 if loss is None or not torch.isfinite(loss) else 1.0], device=accelerator.device
                    )
                    if accelerator.reduce(finite, "min").item() < 1.0:
                        bad = True
                    else:
                        accelerator.backward(loss)
                        step_losses.append(loss.detach())
                    if accelerator.sync_gradients and not bad:
                        accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            if bad:
                state.nonfinite_total += 1
                state.nonfinite_in_row += 1
                if state.nonfinite_in_row >= tc.max_nonfinite_steps:
                    raise NonFiniteLossError(
                        f"{state.nonfinite_in_row} steps in a row had a non-finite loss (at step {state.step}); "
                        f"last good checkpoint: {last_ckpt or 'none'}. Lower optim.learning_rate or check the data."
                    )
                continue
            state.nonfinite_in_row = 0
            lr_schedule.step()
            if models.target is not None:
                ema_update(models.target, unwrapped, tc.ema_decay, tc.ema_impl)
            state.step += 1
            loss_value = accelerator.reduce(torch.stack(step_losses).mean(), "mean").item()
            losses.append(loss_value)
            now = time.perf_counter()
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr_schedule.get_last_lr()[0]:.2e}",
                                 samples_s=f"{B * world * accum / (now - t_last):.1f}")  # fmt: skip
            t_last = now
            if state.step % tc.log_every == 0 or state.step == 1:
                accelerator.log({"loss": loss_value, "lr": lr_schedule.get_last_lr()[0],
                                 "skipped_samples": batches.position.skipped_samples,
                                 "nonfinite_total": state.nonfinite_total}, step=state.step)  # fmt: skip
            stop_now = _agree(accelerator, stop.requested) or (stop_after is not None and state.step >= stop_after)
            if state.step % tc.checkpoint_every == 0 or stop_now:
                state.data = _data_state(accelerator, batches.position)
                last_ckpt = save_checkpoint(accelerator, tc.output_dir, state.step, tc.checkpoints_keep)
            if tc.validation_every and state.step % tc.validation_every == 0:
                run_validation(accelerator, cfg, models, unwrapped, state.step)
            if stop_now:
                status = "interrupted"
                logger.warning("stopped at step %d; checkpoint %s; resume with --resume latest", state.step, last_ckpt)
                break
    progress.close()
    if status == "finished":
        if last_ckpt is None or not last_ckpt.name.endswith(f"{state.step:08d}"):
            state.data = _data_state(accelerator, batches.position)
            last_ckpt = save_checkpoint(accelerator, tc.output_dir, state.step, tc.checkpoints_keep)
        run_validation(accelerator, cfg, models, unwrapped, state.step)
        if tc.export:
            export_pipelines(accelerator, cfg, models, unwrapped)
    accelerator.end_training()
    return TrainResult(state.step, status, out, last_ckpt, losses, state.nonfinite_total,
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
