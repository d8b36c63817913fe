"""Solver details beyond the registry contract (tests/functional/test_solver_contract.py): first-order DPM forms,
the Eq. 17 form of the paper placement, the boundary step 19 -> 0, error messages."""


import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from solver_oracles import GaussianData, network

from lcm_distill.functional import (
    NoiseSchedule,
    cfg_combine,
    guided_solver_step,
    solver_step,
    to_x0_eps,
)


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
