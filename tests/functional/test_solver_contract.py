"""The contract every solver of the registry (lcm_distill.functional.SOLVERS) meets, parametrised over it, so a new
solver is tested the moment it is registered: diffusers oracle where one exists, order of accuracy on the exact
Gaussian PF-ODE, and the CFG placements (paper Eq. 17 vs guided ODE) coinciding exactly when the solver is affine."""

import itertools
import math

import pytest
import torch
from solver_oracles import NO_DIFFUSERS_ORACLE, ORACLES, GaussianData, network

from lcm_distill.functional import SOLVERS, NoiseSchedule, Solver, guided_solver_step, solver_step, to_x0_eps

NAMES = list(SOLVERS)


def test_every_solver_is_registered_with_the_contract():
    for name, solver in SOLVERS.items():
        assert isinstance(solver, Solver) and solver.order >= 1, name
        assert solver.step.__doc__ and len(solver.step.__doc__) > 40, f"{name}: document the solver and its paper"
        assert (name in ORACLES) != (name in NO_DIFFUSERS_ORACLE), (
            f"{name}: add a diffusers oracle to tests/functional/solver_oracles.py or say in NO_DIFFUSERS_ORACLE why "
            "there is none"
        )


@pytest.mark.parametrize("name", [n for n in NAMES if n in ORACLES])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_solver_matches_its_diffusers_oracle(sd_scheduler_config, name, prediction_type):
    oracle, tol = ORACLES[name]
    assert oracle(sd_scheduler_config, prediction_type) < tol


@pytest.mark.parametrize("name", NAMES)
def test_solver_converges_at_its_order_on_gaussian_data(sd_scheduler_config, name):
    order = SOLVERS[name].order
    schedule = NoiseSchedule.from_config(sd_scheduler_config).to(dtype=torch.float64)
    data = GaussianData(schedule)
    x = torch.linspace(-3, 3, 64, dtype=torch.float64).reshape(64, 1)
    errors = []
    for k in (80, 40, 20, 10):
        s = torch.full((64,), 600)
        t = s - k
        errors.append((solver_step(data.denoise, x, s, t, schedule, name) - data.flow(x, s, t)).abs().max().item())
    rates = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    # Local error of an order-p one-step method is O(h^{p+1}).
    assert all(abs(r - (order + 1)) < 0.35 for r in rates), (errors, rates)


@pytest.mark.parametrize("name", NAMES)
def test_cfg_placements_coincide_exactly_when_the_solver_is_affine(sd_scheduler_config, name):
    schedule = NoiseSchedule.from_config(sd_scheduler_config)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 4, 4, generator=g)
    shift = torch.randn(1, 4, 4, 4, generator=g)

    def pair(xc, xu, t):
        a, s = schedule.alpha_sigma(t)
        cond = to_x0_eps(network(xc, t.float()) + shift, xc, a, s, "epsilon")
        return cond, to_x0_eps(network(xu, t.float()), xu, a, s, "epsilon")

    s = torch.tensor([999, 519, 39])
    t = s - 20
    omega = torch.tensor([0.0, 3.0, 8.0])
    paper = guided_solver_step(pair, x, s, t, omega, schedule, name, "paper")
    guided = guided_solver_step(pair, x, s, t, omega, schedule, name, "guided")
    torch.testing.assert_close(paper[0], guided[0], atol=1e-5, rtol=1e-5)  # omega = 0: both are the cond ODE
    cond_only = solver_step(lambda xx, tt: pair(xx, xx, tt)[0], x[:1], s[:1], t[:1], schedule, name)
    torch.testing.assert_close(paper[:1], cond_only, atol=1e-5, rtol=1e-5)
    if SOLVERS[name].affine:
        torch.testing.assert_close(paper, guided, atol=1e-5, rtol=1e-5)
    else:
        assert (paper[1:] - guided[1:]).abs().max() > 1e-4
