"""One optimiser step of the engine: accumulation micro-batches through the run's ConsistencyStep, backward,
gradient clipping, AdamW, LR schedule and target EMA (LCM paper Algorithm 1 lines 3-7 / Algorithm 4).

Shared by the training loop (engine/loop.py) and benchmarks/train_step.py, so the benchmark times exactly what a
run does. Randomness: one draw for the step's whole global batch (accumulation x processes x batch), sliced like
the data, so any split of the same global batch over processes and accumulation sees the same samples with the
same noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..functional.curriculum import curriculum_ema
from ..objectives import ConsistencyStep
from .engine_choice import EngineChoice
from .parallel import Parallel


@dataclass
class StepResult:
    """``loss`` is the global-batch mean (None: the step was skipped). ``empty``: some process had a micro-batch
    without one readable sample (a data problem, not a loss problem); otherwise a skipped step was non-finite."""

    loss: float | None
    logs: dict[str, float] = field(default_factory=dict)
    empty: bool = False
    bad_latents: bool = False  # a skipped step whose VAE / cached latents were non-finite (the cause, not the model)

    @property
    def finite(self) -> bool:
        return self.loss is not None


@dataclass
class TrainStep:
    """Everything an optimiser step touches, bound once; call it with the step index and the batch iterator."""

    accelerator: object
    consistency: ConsistencyStep
    optimizer: torch.optim.Optimizer
    lr_schedule: object
    params: list[torch.nn.Parameter]
    parallel: Parallel | None = None  # the run's engine (DDP when None): clipping and EMA on its parameters
    seed: int = 0
    batch_size: int = 1  # per device
    accumulation: int = 1
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0
    ema_impl: str = "foreach"
    ema_schedule: str = "fixed"  # train.ema_schedule: "curriculum" ties mu to the skipping-step curriculum's stage

    def __post_init__(self) -> None:
        if self.parallel is None:
            self.parallel = Parallel(EngineChoice("ddp", "default"))
            self.parallel.accelerator = self.accelerator

    def ema_at(self, step: int) -> float:
        """Target EMA rate mu after optimiser step ``step`` (train.ema_decay, or its curriculum-tied value)."""
        cs = self.consistency
        return curriculum_ema(self.ema_decay, cs.points_at(step), cs.objective.num_points, self.ema_schedule)

    def __call__(self, step: int, data: Iterator) -> StepResult:
        acc, cs = self.accelerator, self.consistency
        world, rank, B = acc.num_processes, acc.process_index, self.batch_size
        step_noise = cs.draw(self.seed, step, self.accumulation * world * B)
        losses, logs, bad, empty, bad_latents, grad_norm = [], [], False, False, False, None
        for micro in range(self.accumulation):
            batch = next(data)
            lo = (micro * world + rank) * B
            noise = step_noise.slice(lo, lo + B).to(acc.device)
            with acc.accumulate(cs.student):
                out = cs(batch, noise)
                # [finite loss, readable, finite latents], agreed by every process (min); one host sync
                one, zero = torch.ones((), device=acc.device), torch.zeros((), device=acc.device)
                flags = torch.stack([
                    zero if out is None else torch.isfinite(out.loss.detach()).float().to(acc.device),
                    zero if out is None else one,
                    one if out is None or out.latents_finite is None else out.latents_finite.float().to(acc.device),
                ])  # fmt: skip
                flags = acc.reduce(flags, "min").tolist()
                if flags[0] < 1.0:
                    bad, empty, bad_latents = True, empty or flags[1] < 1.0, bad_latents or flags[2] < 1.0
                else:
                    acc.backward(out.loss)
                    losses.append(out.loss.detach())
                    logs.append(out.logs)
                if acc.sync_gradients and not bad:
                    grad_norm = self.parallel.clip(self.params, self.max_grad_norm)
                    self.optimizer.step()
                if acc.sync_gradients:  # accumulation: keep the micro-batches' gradients until the optimiser step
                    self.optimizer.zero_grad(set_to_none=True)  # (accelerate's wrapped optimiser does the same)
        if bad:
            return StepResult(None, empty=empty, bad_latents=bad_latents)
        self.lr_schedule.step()
        if cs.models.target is not None:
            self.parallel.ema_update(cs.models.target, cs.student, self.ema_at(step), self.ema_impl)
        loss = acc.reduce(torch.stack(losses).mean(), "mean").item()
        mean_logs = {k: sum(d[k] for d in logs) / len(logs) for k in logs[0]}
        if grad_norm is not None:  # before clipping (zero2: DeepSpeed clips inside and reports none)
            mean_logs["grad_norm"] = grad_norm
        if cs.objective.curriculum != "none":
            mean_logs.update(num_points=float(cs.points_at(step)), ema_decay=self.ema_at(step))
        return StepResult(loss, mean_logs)
