"""LCD and LCF as one consistency step: batch -> loss (LCM paper Algorithm 1 and Algorithm 4).

The two objectives differ only in where the target point z_{t_n} comes from:
- LCD: one step of the teacher's augmented PF-ODE from z_{t_{n+k}} (solver + CFG placement, Eq. 14-17);
- LCF: the same noise at t_n on the data, z_{t_n} = alpha(t_n) z + sigma(t_n) eps (teacher-free).
Then loss = d(f_theta(z_{t_{n+k}}, omega, c, t_{n+k}), f_theta-(z_{t_n}, omega, c, t_n)).

All randomness of a step (timesteps, omega, noise, the latent posterior sample) is drawn for the *global* batch
from a generator seeded by (seed, step, micro-batch) and sliced per rank, so P processes reproduce one process
with the same global batch, and a resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .conditioning import SDXL_TIME_IDS, Conditioning, fixed_time_ids
from .config import ObjectiveConfig
from .data.batch import Batch
from .functional import (
    NoiseSchedule,
    SkippingGrid,
    boundary_scalings,
    consistency_function,
    consistency_loss,
    guided_solver_step,
    omega_embedding,
    sample_omega,
    to_x0_eps,
)
from .functional.curriculum import curriculum_points
from .objective_kinds import OBJECTIVE_KINDS, ObjectiveKind


@dataclass
class StepNoise:
    """Per-sample randomness of one micro-batch."""

    start: Tensor  # t_{n+k} (B,) int64
    end: Tensor  # t_n (B,) int64
    omega: Tensor  # (B,) fp32
    noise: Tensor  # forward-process noise (B, C, h, w)
    latent_eps: Tensor  # standard normal for the VAE posterior sample (B, C, h, w)

    def slice(self, lo: int, hi: int) -> StepNoise:
        return StepNoise(*(getattr(self, f)[lo:hi] for f in ("start", "end", "omega", "noise", "latent_eps")))

    def to(self, device: torch.device) -> StepNoise:
        return StepNoise(*(getattr(self, f).to(device) for f in ("start", "end", "omega", "noise", "latent_eps")))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of optimiser step ``step``: step randomness is a pure function of (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def draw_step_noise(
    generator: torch.Generator,
    global_batch: int,
    latent_shape: tuple[int, ...],
    grid: SkippingGrid,
    cfg: ObjectiveConfig,
) -> StepNoise:
    """Draw (t_{n+k}, t_n), omega and the two noises for the whole global micro-batch, on CPU in fp32."""
    start, end = grid.sample_pairs(global_batch, generator=generator, sampling=cfg.timestep_sampling)
    omega = sample_omega(global_batch, *cfg.omega_range, generator=generator)  # fixed omega: same random stream
    noise = torch.randn((global_batch, *latent_shape), generator=generator)
    latent_eps = torch.randn((global_batch, *latent_shape), generator=generator)
    return StepNoise(start, end, omega, noise, latent_eps)


def consistency_output(
    unet: nn.Module,
    x: Tensor,
    t: Tensor,
    cond: Conditioning,
    omega_emb: Tensor | None,
    schedule: NoiseSchedule,
) -> Tensor:
    """f(x, t) = c_skip(t) x + c_out(t) x0_hat(unet(x, t, c)) in fp32 (LCM Eq. 9); c is the family's conditioning."""
    out = unet(x, t, timestep_cond=omega_emb, **cond.unet_kwargs()).sample.float()
    alpha, sigma = schedule.alpha_sigma(t, x.ndim)
    x0, _ = to_x0_eps(out, x, alpha, sigma, schedule.prediction_type)
    c_skip, c_out = boundary_scalings(t)
    return consistency_function(x, x0, c_skip, c_out)


def teacher_pair(teacher: nn.Module, cond: Conditioning, uncond: Conditioning, schedule: NoiseSchedule) -> Callable:
    """Pair denoiser for the solvers: cond and uncond in ONE batched teacher forward on [x_c; x_u]."""
    dtype = next(teacher.parameters()).dtype
    context = cond.cat(uncond).unet_kwargs(dtype)

    def pair(x_c: Tensor, x_u: Tensor, t: Tensor):
        x = torch.cat([x_c, x_u])
        tt = torch.cat([t, t])
        out = teacher(x.to(dtype), tt, **context).sample.float()
        alpha, sigma = schedule.alpha_sigma(tt, x.ndim)
        x0, eps = to_x0_eps(out, x, alpha, sigma, schedule.prediction_type)
        B = x_c.shape[0]
        return (x0[:B], eps[:B]), (x0[B:], eps[B:])

    return pair


@dataclass(frozen=True)
class TargetContext:
    """What a target-point function may use: z_{t_{n+k}}, the clean latents, the step's noise, the UNet
    conditioning with and without the prompt, the schedule, the teacher's solver and CFG placement, and (objectives
    that need one) the teacher."""

    x: Tensor  # z_{t_{n+k}} = alpha(t_{n+k}) z + sigma(t_{n+k}) eps
    latents: Tensor  # z
    noise: StepNoise
    cond: Conditioning
    uncond: Conditioning | None
    schedule: NoiseSchedule
    teacher_ctx: Callable[[], contextlib.AbstractContextManager[nn.Module]] | None
    solver: str = "ddim"  # objective.solver
    cfg_placement: str = "paper"  # objective.cfg_placement


def lcd_target_point(c: TargetContext) -> Tensor:
    """LCD (Algorithm 1 line 5, Eq. 17): one step of the teacher's augmented PF-ODE from t_{n+k} to t_n at the
    sample's omega, with objective.solver and objective.cfg_placement (one batched teacher forward per evaluation)."""
    if c.teacher_ctx is None or c.uncond is None:
        raise ValueError("the LCD objective needs a teacher and unconditional embeddings.")
    with c.teacher_ctx() as teacher:
        pair = teacher_pair(teacher, c.cond, c.uncond, c.schedule)
        return guided_solver_step(pair, c.x, c.noise.start, c.noise.end, c.noise.omega, c.schedule, c.solver,
                                  c.cfg_placement)  # fmt: skip


def lcf_target_point(c: TargetContext) -> Tensor:
    """LCF (Algorithm 4 line 5): the same noise eps at t_n on the data, z_{t_n} = alpha(t_n) z + sigma(t_n) eps."""
    return c.schedule.add_noise(c.latents, c.noise.noise, c.noise.end)


@dataclass(frozen=True)
class Objective:
    """A registered objective: where z_{t_n} comes from, and its torch-free facts (objective_kinds.py)."""

    target_point: Callable[[TargetContext], Tensor]
    kind: ObjectiveKind

    @property
    def needs_teacher(self) -> bool:
        return self.kind.needs_teacher


# objective.kind -> Objective. A new objective is one function above plus one line here (docs/extending.md).
OBJECTIVES: dict[str, Objective] = {
    "lcd": Objective(lcd_target_point, OBJECTIVE_KINDS["lcd"]),
    "lcf": Objective(lcf_target_point, OBJECTIVE_KINDS["lcf"]),
}


@dataclass
class StepOutput:
    """A micro-batch's loss and what the engine logs beside it (tensorboard: omega_mean, t_mean). ``latents_finite``
    (0-dim bool tensor, no host sync): whether the VAE (or the latent cache) gave finite latents - a non-finite
    loss is then the VAE's overflow (e.g. SDXL's VAE in fp16), which the engine names."""

    loss: Tensor
    logs: dict[str, float]
    latents_finite: Tensor | None = None


class ConsistencyStep:
    """The LCD/LCF step of a run, set up once: models, skipping grid, target network, teacher context, autocast.

    ``step(batch, noise)`` encodes a data batch with the frozen VAE / text encoder (or reads the latent cache),
    draws the latent as a fresh VAE posterior sample (mean + std * noise.latent_eps) and returns the consistency
    loss with its logs, or None when every sample of the batch was unreadable. The training engine
    (lcm_distill.engine.step), the held-out evaluation and benchmarks/train_step.py all call this one object.

    ``student`` is what the loss differentiates (in training: the accelerate-wrapped module); ``unwrapped`` is the
    plain module (the LoRA teacher is it with adapters disabled); ``target`` defaults to the EMA target, or to the
    student itself under no_grad when there is none (mu = 0).
    """

    def __init__(
        self,
        models,
        objective: ObjectiveConfig,
        resolution: int,
        *,
        student: nn.Module | None = None,
        unwrapped: nn.Module | None = None,
        target: nn.Module | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        sdxl_time_ids: str = "sample",
    ) -> None:
        self.models, self.objective, self.autocast = models, objective, autocast
        self.student = student if student is not None else models.student
        self.unwrapped = unwrapped if unwrapped is not None else self.student
        default_target = models.target if models.target is not None else self.unwrapped
        self.target = target if target is not None else default_target
        self.needs_teacher = OBJECTIVES[objective.kind].needs_teacher
        self.teacher_ctx = (lambda: models.teacher_unet(self.unwrapped)) if self.needs_teacher else None
        self.grid = SkippingGrid(models.schedule.num_train_timesteps, objective.num_points)  # final (inference) grid
        self._grids = {self.grid.num_points: self.grid}
        self.latent_shape = models.latent_shape(resolution)
        self.resolution, self.sdxl_time_ids = resolution, sdxl_time_ids  # data.resolution, data.sdxl_time_ids

    def points_at(self, step: int) -> int:
        """N at optimiser step ``step``: objective.num_points, or the curriculum's stage (functional/curriculum.py)."""
        o = self.objective
        return curriculum_points(step, o.num_points, o.curriculum, o.curriculum_start_points, o.curriculum_stage_steps)

    def grid_at(self, step: int) -> SkippingGrid:
        """The skipping grid training pairs are drawn from at ``step`` (nested in :attr:`grid`)."""
        n = self.points_at(step)
        if n not in self._grids:
            self._grids[n] = SkippingGrid(self.grid.num_train_timesteps, n)
        return self._grids[n]

    def draw(self, seed: int, step: int, global_batch: int) -> StepNoise:
        """The randomness of optimiser step ``step`` for the whole global batch (a pure function of seed, step)."""
        grid = self.grid_at(step)
        return draw_step_noise(step_generator(seed, step), global_batch, self.latent_shape, grid, self.objective)

    def __call__(self, batch: Batch, noise: StepNoise) -> StepOutput | None:
        models = self.models
        if batch.get("latent_mean") is not None:
            device = next(models.vae.parameters()).device
            mean, std, hidden = (
                batch[k].to(device, torch.float32) for k in ("latent_mean", "latent_std", "prompt_embeds")
            )
            pooled = batch.get("pooled_embeds")  # SDXL caches: the pooled embedding (time ids below)
            cond = Conditioning(hidden, None if pooled is None else pooled.to(device, torch.float32))
        elif batch["pixel_values"] is None:
            return None
        else:
            mean, std = models.encode_images(batch["pixel_values"])
            cond = models.encode_prompts(batch["captions"])
        n = mean.shape[0]
        noise = noise.slice(0, n)
        latents = mean + std * noise.latent_eps.to(mean.device)
        if cond.added:  # SDXL: each sample's size/crop conditioning, or the fixed one (data.sdxl_time_ids)
            sample = batch.get("time_ids") if self.sdxl_time_ids == SDXL_TIME_IDS[0] else None
            time_ids = sample if sample is not None else fixed_time_ids(n, self.resolution)
            cond = cond.with_time_ids(time_ids.to(mean.device, torch.float32))
        uncond = models.uncond_embeds(n).with_time_ids(cond.time_ids) if self.needs_teacher else None
        finite = torch.isfinite(mean).all() & torch.isfinite(std).all()
        return StepOutput(*self.loss(latents, cond, uncond, noise.to(mean.device)), latents_finite=finite)

    def loss(self, latents: Tensor, cond: Conditioning, uncond: Conditioning | None,
             noise: StepNoise) -> tuple[Tensor, dict[str, float]]:  # fmt: skip
        """One consistency loss on a micro-batch of clean latents (fp32): d(f_theta(z_{t_{n+k}}), f_theta-(z_{t_n}))
        with z_{t_n} from the objective's target point (Algorithm 1 lines 4-6 / Algorithm 4 lines 4-6)."""
        o, schedule, omega_dim = self.objective, self.models.schedule, self.models.omega_dim
        x = schedule.add_noise(latents, noise.noise, noise.start)
        omega_emb = omega_embedding(noise.omega, omega_dim).to(x.device) if omega_dim else None
        with self.autocast():
            pred = consistency_output(self.student, x, noise.start, cond, omega_emb, schedule)
        with torch.no_grad():
            context = TargetContext(x, latents, noise, cond, uncond, schedule, self.teacher_ctx, o.solver,
                                    o.cfg_placement)  # fmt: skip
            x_prev = OBJECTIVES[o.kind].target_point(context)
            with self.autocast():
                tgt = consistency_output(self.target, x_prev.float(), noise.end, cond, omega_emb, schedule)
        loss = consistency_loss(pred, tgt, o.loss, o.huber_c)
        return loss, {"omega_mean": float(noise.omega.mean()), "t_mean": float(noise.start.float().mean())}
