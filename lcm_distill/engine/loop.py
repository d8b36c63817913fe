"""The one training loop for LCD and LCF, on Accelerate.

Per optimiser step (engine/step.py, :class:`TrainStep` over the run's :class:`~lcm_distill.objectives.ConsistencyStep`):
``gradient_accumulation_steps`` micro-batches, gradient clipping, AdamW, LR schedule, target EMA. Around it:
checkpoints (atomic, last K, exact resume incl. data position), SIGTERM/SIGINT -> checkpoint + clean exit,
non-finite losses skipped and counted, validation grids, export of student/target pipeline folders.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data import DataError
from .checkpoint import CheckpointError, RunLayout, list_checkpoints, read_manifest, save_checkpoint
from .engine_choice import EngineChoice, resolve_engine
from .faults import fault_point
from .outputs import export_pipelines, release_training_memory, run_validation
from .parallel import Parallel
from .preflight import preflight
from .quality import QualityWatch
from .resume import apply_learning_rate
from .setup import set_up_run
from .step import StepResult

logger = logging.getLogger(__name__)


VAE_OVERFLOW_ADVICE = (
    "A VAE that overflows in half precision does this (SDXL's in fp16): keep model.frozen_dtype at bf16 or fp32, or "
    "set model.vae to an fp16-safe VAE (madebyollin/sdxl-vae-fp16-fix for SDXL); a latent cache built that way "
    "(data.cache_dir) must be rebuilt."
)


class NonFiniteLossError(RuntimeError):
    """Too many optimiser steps in a row had a non-finite loss; the message names a sound checkpoint."""


@dataclass
class EngineState:
    """What accelerate does not know: the step counter, failure counters and the data position."""

    step: int = 0
    nonfinite_total: int = 0
    nonfinite_in_row: int = 0
    bad_latents_in_row: int = 0  # of those, steps whose VAE / cached latents were non-finite
    empty_in_row: int = 0  # batches without a readable sample (not a loss problem: counted apart)
    data: dict | None = None
    global_batch: int | None = None  # checked on resume: another global batch would skip or repeat data
    world: int | None = None
    initial_max_abs_weight: float | None = None  # the student's largest weight at step 0 (divergence advice)

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)

    def account(self, result: StepResult, limit: int, skipped_samples: int, advice: Callable[[], str],
                learning_rate: float) -> bool:  # fmt: skip
        """Count one optimiser step's outcome; True when it trained (the step counter moved). ``limit`` skipped steps
        of one kind in a row stop the run: batches without a readable sample (DataError) or non-finite losses
        (NonFiniteLossError, whose message names a sound checkpoint via ``advice``)."""
        if result.empty:
            self.empty_in_row += 1
            if self.empty_in_row >= limit:
                raise DataError(
                    f"{self.empty_in_row} batches in a row had no readable sample (at step {self.step}; "
                    f"{skipped_samples} unreadable samples so far): the data source is broken. "
                    "Check data.dataset / data.shards (python -c 'from PIL import Image; Image.open(...)')."
                )
            return False
        self.empty_in_row = 0
        if not result.finite:
            self.nonfinite_total += 1
            self.nonfinite_in_row += 1
            self.bad_latents_in_row += int(result.bad_latents)
            if self.bad_latents_in_row == 1 and result.bad_latents:
                logger.warning("step %d skipped: the VAE gave non-finite latents. %s", self.step, VAE_OVERFLOW_ADVICE)
            if self.nonfinite_in_row >= limit:
                vae = (f" In {self.bad_latents_in_row} of them the VAE's latents were non-finite: "
                       f"{VAE_OVERFLOW_ADVICE}") if self.bad_latents_in_row else ""  # fmt: skip
                raise NonFiniteLossError(
                    f"{self.nonfinite_in_row} steps in a row had a non-finite loss (at step {self.step}); {advice()} "
                    f"Lower optim.learning_rate (now {learning_rate:g}) or optim.max_grad_norm, or check the data "
                    f"(unreadable samples so far: {skipped_samples}).{vae}"
                )
            return False
        self.nonfinite_in_row = self.bad_latents_in_row = 0
        self.step += 1
        return True


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
    data: dict = field(default_factory=dict)  # this rank's data counters and lost shards (also in run_summary.json)
    quality: dict = field(default_factory=dict)  # quality_fid last / best and their steps (train.quality_every)


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


def build_accelerator(cfg: Config):
    """The run's Accelerator for the engine ``train.distributed`` resolves to (engine/parallel.py)."""
    return Parallel(resolve_engine(cfg)).build_accelerator(cfg)


def train(cfg: Config, resume: str | None = None, accelerator=None, stop_after: int | None = None,
          overwrite: bool = False) -> TrainResult:  # fmt: skip
    """Run (or resume) training as configured. ``overwrite`` deletes the checkpoints of an earlier run in
    train.output_dir (else such a folder is refused without ``resume``); ``stop_after`` ends early (tests)."""
    tc = cfg.train

    # Check everything that needs no weights, then start the processes of the engine it chose.
    plan = preflight(cfg, resume, overwrite)
    parallel = Parallel(plan.engine or EngineChoice("ddp", "default"))
    if accelerator is None:
        accelerator = parallel.build_accelerator(cfg)
    parallel.accelerator = accelerator
    layout, config_yaml = RunLayout(tc.output_dir), cfg.to_yaml()
    if accelerator.is_main_process:
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.config.write_text(config_yaml)

    # Build the run: models -> batches -> sharding -> optimiser -> prepare -> step (engine/setup.py).
    run = set_up_run(cfg, parallel)
    models, batches, student, optimizer, lr_schedule = (run.models, run.batches, run.student, run.optimizer,
                                                        run.lr_schedule)  # fmt: skip
    world = accelerator.num_processes
    if accelerator.is_main_process:
        logger.warning(parallel.log_layout(student, models))
    global_batch = tc.per_device_batch_size * world * tc.gradient_accumulation_steps
    state = EngineState(global_batch=global_batch, world=world)
    accelerator.register_for_checkpointing(lr_schedule, state)
    if parallel.registered_target(models.target) is not None:
        accelerator.register_for_checkpointing(models.target)
    if accelerator.trackers == [] and tc.report_to != "none":
        accelerator.init_trackers("lcm-distill", config={"objective": cfg.objective.kind})

    # Resume: weights, optimiser, schedule, RNG, engine state and every rank's data position.
    if plan.checkpoint is not None:
        _resume(plan, accelerator, parallel, run, state, global_batch)

    # Train: one optimiser step per iteration; failures are counted by the engine state, which stops a broken run.
    losses: list[float] = []
    progress = _progress(accelerator, state.step, tc.max_train_steps)
    data_iter = iter(batches)
    t_last, last_ckpt = time.perf_counter(), (list_checkpoints(tc.output_dir) or [None])[-1]
    initial_max_w = parallel.max_abs_weight(student)  # collective: every rank computes it
    initial_max_w = state.initial_max_abs_weight = state.initial_max_abs_weight or initial_max_w
    status = "finished"
    shards = _shard_identity(batches)
    watch = QualityWatch(cfg, accelerator, parallel, models, layout.root, plan.checkpoint is not None) \
        if tc.quality_every else None  # fmt: skip
    shown: dict[str, str] = {}  # extra progress-bar fields (the last quality_fid)
    warned_upscaled = False

    def checkpoint() -> Path:
        state.data = _data_state(accelerator, batches.position)
        extra = {"max_abs_weight": parallel.max_abs_weight(student), "loss": losses[-1] if losses else None,
                 "engine": parallel.name, **({"data_shards": shards} if shards else {})}  # fmt: skip
        return save_checkpoint(accelerator, tc.output_dir, state.step, tc.checkpoints_keep, config_yaml, extra,
                               save_extra=lambda folder: parallel.save_state(folder, student, optimizer, models.target))

    def validate() -> None:  # collective: whole weights are gathered on every rank, images drawn on the main one
        run_validation(accelerator, cfg, models, parallel.full_module(student), state.step,
                       target=parallel.full_module(models.target, student=False))

    def advice() -> str:  # read only when a run of non-finite steps stops it
        return _checkpoint_advice(tc.output_dir, initial_max_w)

    with _StopFlag() as stop:
        while state.step < tc.max_train_steps:
            result = run.step(state.step, data_iter)
            if not state.account(result, tc.max_nonfinite_steps, batches.position.skipped_samples, advice,
                                 cfg.optim.learning_rate):  # fmt: skip
                continue
            fault_point("step", state.step)
            losses.append(result.loss)
            t_last = _report(accelerator, progress, state, result, lr_schedule, batches.position, global_batch,
                             t_last, tc.log_every, shown)  # fmt: skip
            if not warned_upscaled and getattr(batches.position, "upscaled_samples", 0):
                warned_upscaled = True
                logger.warning(UPSCALED_WARNING, batches.position.upscaled_samples, state.step, cfg.data.resolution,
                               cfg.data.resolution)  # fmt: skip
            stop_now = _agree(accelerator, stop.requested) or (stop_after is not None and state.step >= stop_after)
            if state.step % tc.checkpoint_every == 0 or stop_now:
                last_ckpt = checkpoint()
            if tc.validation_every and state.step % tc.validation_every == 0:
                validate()
            if watch is not None and state.step % tc.quality_every == 0:
                shown["quality_fid"] = f"{watch.check(state.step, student, models.target):.3g}"  # progress bar
            if stop_now:
                status = "interrupted"
                logger.warning("stopped at step %d; checkpoint %s; resume with --resume latest", state.step, last_ckpt)
                break
    progress.close()

    # Finish: a last checkpoint, validation grids and the exported pipeline folders (an interrupted run skips them).
    if status == "finished":
        if last_ckpt is None or last_ckpt.name != layout.checkpoint(state.step).name:
            last_ckpt = checkpoint()
        validate()
        if watch is not None and watch.last_step != state.step:  # the final weights are judged too
            watch.check(state.step, student, models.target)
        if tc.export:
            release_training_memory(optimizer)  # the checkpoint just written holds the optimiser's states
            whole_student, whole_target = parallel.full_module(student), parallel.full_module(models.target, False)
            if tc.export_from == "best":
                watch.use_best(whole_student, whole_target)
            export_pipelines(accelerator, cfg, models, whole_student, target=whole_target)
    accelerator.end_training()
    data = data_summary(state.data)
    if accelerator.is_main_process:
        quality = watch.summary() if watch is not None else {}
        summary = {"status": status, "step": state.step, "last_checkpoint": str(last_ckpt),
                   "nonfinite_total": state.nonfinite_total, "data": data,
                   **({"quality": quality | {"exported": tc.export_from}} if quality else {})}  # fmt: skip
        (layout.root / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        for lost in data.get("lost_shards", []):
            logger.warning("shard lost (read error; the rest of it was not trained on): %s", lost)
    return TrainResult(state.step, status, layout.root, last_ckpt, losses, state.nonfinite_total,
                       batches.position.skipped_samples, accelerator.is_main_process, data,
                       watch.summary() if watch is not None else {})  # fmt: skip


def _resume(plan, accelerator, parallel: Parallel, run, state: EngineState, global_batch: int) -> None:
    """Load ``plan.checkpoint`` into the run in place and check that it continues the same run."""
    try:
        accelerator.load_state(str(plan.checkpoint))
    except Exception as err:  # a pre-0.2 checkpoint (no manifest) damaged in a way its file list cannot show
        raise CheckpointError(f"--resume: {plan.checkpoint} could not be loaded ({type(err).__name__}: {err}); "
                              "resume from an older checkpoint with --resume PATH.") from err  # fmt: skip
    parallel.load_state(plan.checkpoint, run.student, run.optimizer, run.models.target)
    _check_resumed_batch(state, global_batch, accelerator.num_processes, plan.checkpoint)
    run.batches.position.load_state_dict(_own_data_state(state.data, accelerator.process_index))
    if plan.learning_rate_change is not None:
        apply_learning_rate(run.optimizer, run.lr_schedule, *plan.learning_rate_change)
    logger.info("resumed from %s at step %d", plan.checkpoint, state.step)


def _report(accelerator, progress, state: EngineState, result: StepResult, lr_schedule, position, global_batch: int,
            t_last: float, log_every: int, shown: dict) -> float:  # fmt: skip
    """Progress bar every step, tracker every ``log_every`` steps (and step 1); returns the time of this report."""
    now = time.perf_counter()
    counters = data_counters(position)
    lr = lr_schedule.get_last_lr()[0]
    progress.update(1)
    progress.set_postfix(loss=f"{result.loss:.4g}", lr=f"{lr:.2e}", samples_s=f"{global_batch / (now - t_last):.1f}",
                         **{k: v for k, v in counters.items() if v}, **shown)  # fmt: skip
    if state.step % log_every == 0 or state.step == 1:
        accelerator.log({"loss": result.loss, "lr": lr, **result.logs, **counters,
                         "nonfinite_total": state.nonfinite_total}, step=state.step)  # fmt: skip
    return now


def _checkpoint_advice(output_dir: str, initial_max_w: float) -> str:
    """Name the newest checkpoint whose weights have not blown up (max |w| within 10x of the start)."""
    ckpts = list_checkpoints(output_dir)
    if not ckpts:
        return "last good checkpoint: none (nothing was saved yet)."
    weights = {c: read_manifest(c).get("max_abs_weight") for c in ckpts}
    sane = [c for c in ckpts if weights[c] is None or weights[c] <= 10 * max(initial_max_w, 1e-12)]
    newest, w = ckpts[-1], weights[ckpts[-1]]
    if sane and sane[-1] == newest:
        return f"last good checkpoint: {newest} (resume from it with --resume latest after the change below)."
    if sane:
        return (f"the last checkpoint {newest} may hold diverged weights (max |w| {w:.3g} vs {initial_max_w:.3g} at "
                f"the start); last good checkpoint: {sane[-1]} (resume with --resume {sane[-1]}).")  # fmt: skip
    return (f"last good checkpoint: none - every checkpoint may hold diverged weights (max |w| {w:.3g} vs "
            f"{initial_max_w:.3g} at the start); start a new run.")  # fmt: skip


def _check_resumed_batch(state: EngineState, global_batch: int, world: int, ckpt: Path) -> None:
    if state.global_batch is not None and state.global_batch != global_batch:
        raise ConfigError(
            f"--resume {ckpt}: the run was trained with a global batch of {state.global_batch} "
            f"(per_device_batch_size x processes x gradient_accumulation_steps); this run has {global_batch}, which "
            "would skip or repeat data. Use the same train.per_device_batch_size, process count and "
            "train.gradient_accumulation_steps, or start a new run."
        )
    if state.world is not None and state.world != world:
        raise ConfigError(f"--resume {ckpt}: the run was trained on {state.world} processes, this one has {world}; "
                          "resume with the same process count (accelerate launch --num_processes).")  # fmt: skip
    state.global_batch, state.world = global_batch, world


def data_counters(position) -> dict[str, int]:
    """What the data source dropped or patched so far (this rank), for the progress bar and tensorboard."""
    names = ("skipped_samples", "filtered_samples", "read_samples", "missing_captions", "truncated_shards",
             "upscaled_samples")
    return {n: int(getattr(position, n)) for n in names if hasattr(position, n)}


def _shard_identity(batches) -> dict | None:
    """A webdataset run's shard names and sizes, for the checkpoint manifest (engine/preflight.py compares them when
    a run resumes, so a moved copy of the shards resumes and another set is refused before models load)."""
    from ..data.webdataset import TarShards, shard_identity

    source = getattr(batches, "source", None)
    return shard_identity(source.urls) if isinstance(source, TarShards) else None


UPSCALED_WARNING = (
    "%d samples of the first %d steps were stored smaller than data.resolution=%d and were enlarged (blurry training "
    "targets; counted as upscaled_samples). img2dataset stores 256 px unless given --image_size %d; the "
    "data.min_width/min_height filters read the original size, not the stored one."
)
SUMMARY_FILE = "run_summary.json"  # written at the end of every run: status, step and what the data source dropped


def data_summary(data: dict | None) -> dict:
    """Every rank's data counters summed and lost shards listed, from the data state of the last checkpoint."""
    ranks = (data or {}).get("per_rank", [data] if data else [])
    out: dict = {}
    for own in ranks:
        for key, value in own.items():
            if key.endswith(("_samples", "_captions", "_shards")) and isinstance(value, int):
                out[key] = out.get(key, 0) + value
        out.setdefault("lost_shards", []).extend(own.get("lost_shards", []))
    return out


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
