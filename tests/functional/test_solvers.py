"""Solver oracles (diffusers schedulers) and analytic checks (Gaussian data, exact PF-ODE flow)."""

import itertools
import math

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, DPMSolverSinglestepScheduler

from lcm_distill.functional import (
    NoiseSchedule,
    SkippingGrid,
    cfg_combine,
    guided_solver_step,
    lambda_midpoint,
    solver_step,
    to_x0_eps,
)


def network(x, t):
    """A fixed nonlinear stand-in for a teacher output, smooth in (x, t)."""
    return torch.tanh(x) * 0.7 + 0.3 * torch.sin(x * 2.0) + 1e-3 * t.reshape(-1, *([1] * (x.ndim - 1)))


def make_denoiser(schedule, prediction_type):
    def denoise(x, t):
        a, s = schedule.alpha_sigma(t, x.ndim)
        return to_x0_eps(network(x, t.to(x.dtype)), x, a, s, prediction_type)

    return denoise


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_equals_diffusers_at_every_grid_point(sd_scheduler_config, prediction_type):
    cfg = {**sd_scheduler_config, "prediction_type": prediction_type}
    schedule = NoiseSchedule.from_config(cfg)
    grid = SkippingGrid(1000, 50)
    ddim = DDIMScheduler(**{**cfg, "timestep_spacing": "trailing"})
    ddim.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    worst = 0.0
    for s in grid.timesteps.tolist():
        s_t = torch.tensor([s, s])
        out = network(x, s_t.float())
        ours = solver_step(make_denoiser(schedule, prediction_type), x, s_t, grid.previous(s_t), schedule, "ddim")
        ref = ddim.step(out, s, x, eta=0.0).prev_sample
        worst = max(worst, (ours - ref).abs().max().item())
    # fp32; the two evaluate the same formula in a different order (measured max error ~5e-7).
    assert worst < 2e-6


@pytest.mark.parametrize(("algorithm", "solver"), [("dpmsolver", "dpm_solver_2"), ("dpmsolver++", "dpm_solver_pp_2s")])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("s", "t"), [(999, 979), (519, 499), (39, 19), (19, 0)])
def test_second_order_equals_diffusers_singlestep(sd_scheduler_config, algorithm, solver, prediction_type, s, t):
    cfg = {**sd_scheduler_config, "prediction_type": prediction_type}
    schedule = NoiseSchedule.from_config(cfg).to(dtype=torch.float64)
    denoise = make_denoiser(schedule, prediction_type)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 4, 4, generator=g, dtype=torch.float64)
    s_t, t_t = torch.tensor([s]), torch.tensor([t])
    ours = solver_step(denoise, x, s_t, t_t, schedule, solver)

    ref = DPMSolverSinglestepScheduler(
        **{k: v for k, v in cfg.items() if k not in ("clip_sample", "set_alpha_to_one", "steps_offset")},
        solver_order=2,
        algorithm_type=algorithm,
        solver_type="midpoint",
        final_sigmas_type="sigma_min",
    )
    ref.set_timesteps(10)
    lam_mid, t_mid = lambda_midpoint(schedule, s_t, t_t)
    karras = lambda lam: torch.exp(-lam)  # noqa: E731  (diffusers' sigma = sigma_t / alpha_t = e^{-lambda})
    lam = schedule.lambdas
    ref.sigmas = torch.stack([karras(lam[s]), karras(lam_mid[0]), karras(lam[t])])
    pick = (lambda pair: pair[0]) if algorithm == "dpmsolver++" else (lambda pair: pair[1])
    m_s = pick(denoise(x, s_t.double()))
    ref._step_index = 0
    u = ref.dpm_solver_first_order_update(m_s, sample=x)
    m_mid = pick(denoise(u, t_mid))
    ref._step_index = 1
    expected = ref.singlestep_dpm_solver_second_order_update([m_s, m_mid], sample=x)
    torch.testing.assert_close(ours, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_first_order_dpm_equals_ddim_and_diffusers(sd_scheduler_config, prediction_type):
    from lcm_distill.functional import ddim_step, dpm_solver_first_order, dpm_solver_pp_first_order

    schedule = NoiseSchedule.from_config(sd_scheduler_config)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    for s, t in [(999, 979), (519, 499), (39, 19)]:
        s_t, t_t = torch.tensor([s]), torch.tensor([t])
        a_s, sg_s = schedule.alpha_sigma(s_t)
        a_t, sg_t = schedule.alpha_sigma(t_t)
        h = schedule.lambdas[t] - schedule.lambdas[s]
        out = network(x, s_t.float())
        x0, eps = to_x0_eps(out, x, a_s, sg_s, "epsilon")
        d = ddim_step(x0, eps, a_t, sg_t)
        torch.testing.assert_close(dpm_solver_first_order(x, eps, a_s, a_t, sg_t, h), d, atol=5e-6, rtol=0)
        torch.testing.assert_close(dpm_solver_pp_first_order(x, x0, sg_s, a_t, sg_t, h), d, atol=5e-6, rtol=0)
        ref = DPMSolverMultistepScheduler(
            **{
                k: v
                for k, v in sd_scheduler_config.items()
                if k not in ("clip_sample", "set_alpha_to_one", "steps_offset")
            },
            solver_order=1,
            algorithm_type="dpmsolver++",
            final_sigmas_type="sigma_min",
        )
        ref.set_timesteps(timesteps=[s, t])
        torch.testing.assert_close(ref.step(out, s, x).prev_sample, d, atol=5e-6, rtol=0)


def test_cfg_placements_coincide_for_ddim_only(sd_scheduler_config):
    schedule = NoiseSchedule.from_config(sd_scheduler_config)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 4, 4, generator=g)
    shift = torch.randn(1, 4, 4, 4, generator=g)
    calls = []

    def pair(xc, xu, t):
        calls.append(xc.shape[0])
        a, s = schedule.alpha_sigma(t)
        return to_x0_eps(network(xc, t.float()) + shift, xc, a, s, "epsilon"), to_x0_eps(
            network(xu, t.float()), xu, a, s, "epsilon"
        )

    s = torch.tensor([999, 519, 39])
    t = s - 20
    omega = torch.tensor([0.0, 3.0, 8.0])
    paper = guided_solver_step(pair, x, s, t, omega, schedule, "ddim", "paper")
    guided = guided_solver_step(pair, x, s, t, omega, schedule, "ddim", "guided")
    torch.testing.assert_close(paper, guided, atol=1e-5, rtol=1e-5)  # DDIM is affine in (x0, eps)
    # Algorithm 1 form: z + (1+w)(Psi_c - z) - w(Psi_u - z)
    (x0c, ec), (x0u, eu) = pair(x, x, s)
    a_t, s_t = schedule.alpha_sigma(t)
    psi_c, psi_u = a_t * x0c + s_t * ec, a_t * x0u + s_t * eu
    w = omega.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(paper, x + (1 + w) * (psi_c - x) - w * (psi_u - x), atol=1e-5, rtol=1e-5)
    for solver in ("dpm_solver_2", "dpm_solver_pp_2s"):
        p = guided_solver_step(pair, x, s, t, omega, schedule, solver, "paper")
        gd = guided_solver_step(pair, x, s, t, omega, schedule, solver, "guided")
        assert torch.allclose(p[0], gd[0], atol=1e-5)  # omega = 0: both are the conditional ODE
        assert (p[1:] - gd[1:]).abs().max() > 1e-4  # second order: the placements differ
    with pytest.raises(ValueError, match="cfg_placement"):
        guided_solver_step(pair, x, s, t, omega, schedule, "ddim", "both")
    with pytest.raises(ValueError, match="solver"):
        solver_step(lambda a, b: (a, a), x, s, t, schedule, "euler")


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


@pytest.mark.parametrize(("solver", "order"), [("ddim", 1), ("dpm_solver_2", 2), ("dpm_solver_pp_2s", 2)])
def test_solvers_converge_at_their_order_on_gaussian_data(sd_scheduler_config, solver, order):
    schedule = NoiseSchedule.from_config(sd_scheduler_config).to(dtype=torch.float64)
    data = GaussianData(schedule)
    x = torch.linspace(-3, 3, 64, dtype=torch.float64).reshape(64, 1)
    errors = []
    for k in (80, 40, 20, 10):
        s = torch.full((64,), 600)
        t = s - k
        err = (solver_step(data.denoise, x, s, t, schedule, solver) - data.flow(x, s, t)).abs().max().item()
        errors.append(err)
    rates = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    # Local error of an order-p one-step method is O(h^{p+1}).
    assert all(abs(r - (order + 1)) < 0.35 for r in rates), (errors, rates)


def test_boundary_step_lands_on_abar0_and_second_order_helps(sd_scheduler_config):
    """The first grid step solves 19 -> 0 (abar[0], not 1): a long step in lambda where 2nd order pays off."""
    schedule = NoiseSchedule.from_config(sd_scheduler_config).to(dtype=torch.float64)
    data = GaussianData(schedule)
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(8, 1)
    s, t = torch.full((8,), 19), torch.zeros(8, dtype=torch.long)
    exact = data.flow(x, s, t)
    err = {
        k: (solver_step(data.denoise, x, s, t, schedule, k) - exact).abs().max().item()
        for k in ("ddim", "dpm_solver_pp_2s", "dpm_solver_2")
    }
    assert err["dpm_solver_pp_2s"] < err["ddim"] / 2 and err["dpm_solver_2"] < err["ddim"] / 2, err
    x0, eps = data.denoise(x, s)
    a0 = schedule.alphas_cumprod[0].sqrt()
    ddim = solver_step(data.denoise, x, s, t, schedule, "ddim")
    torch.testing.assert_close(ddim, a0 * x0 + (1 - a0**2).sqrt() * eps, atol=1e-12, rtol=0)
    assert cfg_combine(x, x, torch.full((8,), 5.0)).equal(x)
