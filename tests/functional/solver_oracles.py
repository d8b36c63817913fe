"""Oracles for the solver registry contract: a smooth stand-in network, the exact PF-ODE of Gaussian data, and one
diffusers reference per solver that has one (ORACLES). A new solver in lcm_distill.functional.SOLVERS must get an
entry here or in NO_DIFFUSERS_ORACLE (with the reason), or test_every_solver_is_registered_with_the_contract fails."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DPMSolverSinglestepScheduler

from lcm_distill.functional import NoiseSchedule, SkippingGrid, lambda_midpoint, solver_step, to_x0_eps


def network(x, t):
    """A fixed nonlinear stand-in for a teacher output, smooth in (x, t)."""
    return torch.tanh(x) * 0.7 + 0.3 * torch.sin(x * 2.0) + 1e-3 * t.reshape(-1, *([1] * (x.ndim - 1)))


def make_denoiser(schedule, prediction_type):
    def denoise(x, t):
        a, s = schedule.alpha_sigma(t, x.ndim)
        return to_x0_eps(network(x, t.to(x.dtype)), x, a, s, prediction_type)

    return denoise


class GaussianData:
    """x0 ~ N(mu, s^2) per element: E[x0 | x_t] and the PF-ODE flow are closed-form.

    The marginal at t is N(alpha mu, alpha^2 s^2 + sigma^2); the PF-ODE is the monotone map between marginals:
    x_t = alpha_t mu + std_t / std_s (x_s - alpha_s mu).
    """

    def __init__(self, schedule, mu=0.4, s=0.6):
        self.schedule, self.mu, self.s = schedule, mu, s

    def _alpha_sigma(self, t):
        return self.schedule.alpha_sigma(t, 2)

    def denoise(self, x, t):
        a, sg = self._alpha_sigma(t)
        x0 = self.mu + a * self.s**2 / (a**2 * self.s**2 + sg**2) * (x - a * self.mu)
        return x0, (x - a * x0) / sg

    def flow(self, x, s, t):
        a_s, sg_s = self._alpha_sigma(s)
        a_t, sg_t = self._alpha_sigma(t)
        std_s, std_t = (a_s**2 * self.s**2 + sg_s**2).sqrt(), (a_t**2 * self.s**2 + sg_t**2).sqrt()
        return a_t * self.mu + std_t / std_s * (x - a_s * self.mu)


def ddim_oracle(cfg: dict, prediction_type: str) -> float:
    """Max |ours - DDIMScheduler.step(eta=0)| over every grid point of N = 50 (fp32)."""
    cfg = {**cfg, "prediction_type": prediction_type}
    schedule = NoiseSchedule.from_config(cfg)
    grid = SkippingGrid(1000, 50)
    ddim = DDIMScheduler(**{**cfg, "timestep_spacing": "trailing"})
    ddim.set_timesteps(50)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for s in grid.timesteps.tolist():
        s_t = torch.tensor([s, s])
        ours = solver_step(make_denoiser(schedule, prediction_type), x, s_t, grid.previous(s_t), schedule, "ddim")
        ref = ddim.step(network(x, s_t.float()), s, x, eta=0.0).prev_sample
        worst = max(worst, (ours - ref).abs().max().item())
    return worst


def dpm_singlestep_oracle(algorithm: str, solver: str):
    """Max |ours - DPMSolverSinglestepScheduler(order 2, midpoint)| on steps across the grid (fp64)."""

    def run(cfg: dict, prediction_type: str) -> float:
        cfg = {**cfg, "prediction_type": prediction_type}
        schedule = NoiseSchedule.from_config(cfg).to(dtype=torch.float64)
        denoise = make_denoiser(schedule, prediction_type)
        worst = 0.0
        for s, t in [(999, 979), (519, 499), (39, 19), (19, 0)]:
            x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            s_t, t_t = torch.tensor([s]), torch.tensor([t])
            ours = solver_step(denoise, x, s_t, t_t, schedule, solver)
            ref = DPMSolverSinglestepScheduler(
                **{k: v for k, v in cfg.items() if k not in ("clip_sample", "set_alpha_to_one", "steps_offset")},
                solver_order=2, algorithm_type=algorithm, solver_type="midpoint", final_sigmas_type="sigma_min",
            )  # fmt: skip
            ref.set_timesteps(10)
            lam_mid, t_mid = lambda_midpoint(schedule, s_t, t_t)
            lam = schedule.lambdas  # diffusers' sigma = sigma_t / alpha_t = e^{-lambda}
            ref.sigmas = torch.stack([torch.exp(-lam[s]), torch.exp(-lam_mid[0]), torch.exp(-lam[t])])
            pick = (lambda pair: pair[0]) if algorithm == "dpmsolver++" else (lambda pair: pair[1])
            m_s = pick(denoise(x, s_t.double()))
            ref._step_index = 0
            u = ref.dpm_solver_first_order_update(m_s, sample=x)
            m_mid = pick(denoise(u, t_mid))
            ref._step_index = 1
            expected = ref.singlestep_dpm_solver_second_order_update([m_s, m_mid], sample=x)
            worst = max(worst, (ours - expected).abs().max().item())
        return worst

    return run


# solver -> (oracle(scheduler_config, prediction_type) -> max abs error, tolerance)
ORACLES = {
    # fp32; the two evaluate the same formula in a different order (measured max error ~5e-7).
    "ddim": (ddim_oracle, 2e-6),
    "dpm_solver_2": (dpm_singlestep_oracle("dpmsolver", "dpm_solver_2"), 1e-10),
    "dpm_solver_pp_2s": (dpm_singlestep_oracle("dpmsolver++", "dpm_solver_pp_2s"), 1e-10),
}
NO_DIFFUSERS_ORACLE: dict[str, str] = {}  # solver -> why diffusers has no reference for it
