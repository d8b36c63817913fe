"""One-step PF-ODE solvers from t_{n+k} = s to t_n = t for the LCD target (LCM paper §4.2-4.3, Eq. 14-17).

Denoiser contract (k-diffusion style): ``denoise(x, t) -> (x0_hat, eps_hat)`` with per-sample timesteps t (B,),
possibly non-integer (DPM-Solver midpoints). Solvers never see a network or a prediction type.

Solvers are a registry (:data:`SOLVERS`) of small functions ``step(denoise, x, s, t, schedule) -> x_t``, one per
solver, each documented with its paper; the first-order parts of the DPM solvers equal DDIM.

CFG placement for the augmented PF-ODE (:func:`guided_solver_step`): ``"paper"`` solves the conditional and
unconditional ODEs separately and mixes the results, z + (1+omega)(Psi_c - z) - omega(Psi_u - z) (Eq. 17 /
Algorithm 1); ``"guided"`` solves one ODE whose denoiser is CFG-mixed at every evaluation. They coincide for
DDIM (affine in (x0, eps)) and differ for second-order solvers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .guidance import cfg_combine
from .schedule import NoiseSchedule, alpha_sigma_from_lambda

Denoiser = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
SolverFn = Callable[[Denoiser, Tensor, Tensor, Tensor, NoiseSchedule], Tensor]
PairDenoiser = Callable[[Tensor, Tensor, Tensor], tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]
CFG_PLACEMENTS = ("paper", "guided")


def _bcast(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


def ddim_step(x0: Tensor, eps: Tensor, alpha_t: Tensor, sigma_t: Tensor) -> Tensor:
    """Deterministic DDIM update to time t: alpha_t x0_hat + sigma_t eps_hat (DDIM Eq. 12, eta = 0)."""
    return alpha_t * x0 + sigma_t * eps


def dpm_solver_first_order(
    x: Tensor, eps: Tensor, alpha_s: Tensor, alpha_t: Tensor, sigma_t: Tensor, h: Tensor
) -> Tensor:
    """DPM-Solver-1 (noise form, Lu et al. 2022a Eq. 3.7): (alpha_t/alpha_s) x - sigma_t (e^h - 1) eps; = DDIM."""
    return (alpha_t / alpha_s) * x - sigma_t * torch.expm1(h) * eps


def dpm_solver_pp_first_order(
    x: Tensor, x0: Tensor, sigma_s: Tensor, alpha_t: Tensor, sigma_t: Tensor, h: Tensor
) -> Tensor:
    """DPM-Solver++1 (data form, Lu et al. 2022b Eq. 9): (sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) x0; = DDIM."""
    return (sigma_t / sigma_s) * x - alpha_t * torch.expm1(-h) * x0


def lambda_midpoint(schedule: NoiseSchedule, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Midpoint of [s, t] in lambda (r = 1/2) and the continuous timestep there (generally non-integer)."""
    lam = schedule.lambdas.to(s.device)
    lam_mid = 0.5 * (lam[s.long()] + lam[t.long()])
    return lam_mid, schedule.timestep_for_lambda(lam_mid)


def _midpoint(schedule: NoiseSchedule, x: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(h, t_mid, alpha_mid, sigma_mid) of the lambda-midpoint step shared by the second-order solvers."""
    lam = schedule.lambdas.to(x.device)
    h = _bcast(lam[t.long()] - lam[s.long()], x.ndim)
    lam_mid, t_mid = lambda_midpoint(schedule, s, t)
    alpha_m, sigma_m = (_bcast(v, x.ndim) for v in alpha_sigma_from_lambda(lam_mid))
    return h, t_mid, alpha_m, sigma_m


def ddim(denoise: Denoiser, x: Tensor, s: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """DDIM (Song et al. 2021, Eq. 12, eta = 0): one denoiser call at (x_s, s), x_t = alpha_t x0 + sigma_t eps.

    First order. Affine in the denoiser output, so both CFG placements give the same target (paper Eq. 17 = the
    guided ODE); LCM paper §4.3 and diffusers' LCD scripts use it.
    """
    x0, eps = denoise(x, s)
    alpha_t, sigma_t = schedule.alpha_sigma(t, x.ndim)
    return ddim_step(x0, eps, alpha_t, sigma_t)


def dpm_solver_2(denoise: Denoiser, x: Tensor, s: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """DPM-Solver-2 (Lu et al. 2022a, Algorithm 1 with r = 1/2, noise form): a first-order step to the
    lambda-midpoint, a second denoiser call there, then the full step with the midpoint's eps. Second order."""
    alpha_s, _ = schedule.alpha_sigma(s, x.ndim)
    alpha_t, sigma_t = schedule.alpha_sigma(t, x.ndim)
    _, eps = denoise(x, s)
    h, t_mid, alpha_m, sigma_m = _midpoint(schedule, x, s, t)
    u = dpm_solver_first_order(x, eps, alpha_s, alpha_m, sigma_m, 0.5 * h)
    _, eps_mid = denoise(u, t_mid)
    return dpm_solver_first_order(x, eps_mid, alpha_s, alpha_t, sigma_t, h)


def dpm_solver_pp_2s(denoise: Denoiser, x: Tensor, s: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022b, Algorithm 1, data form): as DPM-Solver-2 but stepping with x0_hat, which
    behaves better under large guidance. Second order."""
    _, sigma_s = schedule.alpha_sigma(s, x.ndim)
    alpha_t, sigma_t = schedule.alpha_sigma(t, x.ndim)
    x0, _ = denoise(x, s)
    h, t_mid, alpha_m, sigma_m = _midpoint(schedule, x, s, t)
    u = dpm_solver_pp_first_order(x, x0, sigma_s, alpha_m, sigma_m, 0.5 * h)
    x0_mid, _ = denoise(u, t_mid)
    return dpm_solver_pp_first_order(x, x0_mid, sigma_s, alpha_t, sigma_t, h)


@dataclass(frozen=True)
class Solver:
    """A registered solver: ``step(denoise, x, s, t, schedule) -> x_t``, its order of accuracy (the contract test
    in tests/functional/test_solver_contract.py checks it on the exact Gaussian PF-ODE), and whether it is affine
    in the denoiser output (then the paper and guided CFG placements must coincide, else they must differ)."""

    step: SolverFn
    order: int  # also its teacher evaluations per step (DPM-Solver-2 / ++(2S): x_s and the lambda-midpoint)
    affine: bool
    label: str  # its name in tables and plots


# The registry: config choices (objective.solver), the contract tests and the benchmarks all read it.
# A new solver is one function above plus one line here (docs/extending.md).
SOLVERS: dict[str, Solver] = {
    "ddim": Solver(ddim, order=1, affine=True, label="DDIM"),
    "dpm_solver_2": Solver(dpm_solver_2, order=2, affine=False, label="DPM-Solver-2"),
    "dpm_solver_pp_2s": Solver(dpm_solver_pp_2s, order=2, affine=False, label="DPM-Solver++(2S)"),
}


def solver_step(
    denoise: Denoiser, x: Tensor, s: Tensor, t: Tensor, schedule: NoiseSchedule, solver: str = "ddim"
) -> Tensor:
    """Solve the PF-ODE of ``denoise`` from s to t (per-sample integer timesteps) with one step of ``solver``."""
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not supported; use one of {list(SOLVERS)}.")
    return SOLVERS[solver].step(denoise, x, s, t, schedule)


def guided_solver_step(
    pair: PairDenoiser,
    x: Tensor,
    s: Tensor,
    t: Tensor,
    omega: Tensor,
    schedule: NoiseSchedule,
    solver: str = "ddim",
    placement: str = "paper",
) -> Tensor:
    """One step of the augmented PF-ODE (paper Eq. 16-17) at per-sample guidance omega (B,).

    ``pair(x_cond, x_uncond, t)`` returns ((x0_c, eps_c), (x0_u, eps_u)); callers implement it as one batched
    network forward on [x_cond; x_uncond] with [c; empty] embeddings, so both placements cost one forward per
    denoiser evaluation.
    """
    if placement == "guided":

        def guided(xx: Tensor, tt: Tensor) -> tuple[Tensor, Tensor]:
            (x0_c, eps_c), (x0_u, eps_u) = pair(xx, xx, tt)
            return cfg_combine(x0_c, x0_u, omega), cfg_combine(eps_c, eps_u, omega)

        return solver_step(guided, x, s, t, schedule, solver)
    if placement != "paper":
        raise ValueError(f"cfg_placement={placement!r} is not supported; use one of {CFG_PLACEMENTS}.")
    B = x.shape[0]

    def stacked(xx: Tensor, tt: Tensor) -> tuple[Tensor, Tensor]:
        (x0_c, eps_c), (x0_u, eps_u) = pair(xx[:B], xx[B:], tt[:B])
        return torch.cat([x0_c, x0_u]), torch.cat([eps_c, eps_u])

    both = solver_step(stacked, torch.cat([x, x]), torch.cat([s, s]), torch.cat([t, t]), schedule, solver)
    return cfg_combine(both[:B], both[B:], omega)
