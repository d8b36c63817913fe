"""Contracts of the objective and loss registries, parametrised over them so a new entry is tested on arrival."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lcm_distill.conditioning import Conditioning
from lcm_distill.functional import LOSSES, NoiseSchedule, consistency_loss
from lcm_distill.objectives import OBJECTIVES, StepNoise, TargetContext


class FakeTeacher(nn.Module):
    """A smooth eps-predictor standing in for the teacher UNet (same call signature)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t, encoder_hidden_states):
        shift = encoder_hidden_states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        return SimpleNamespace(sample=torch.tanh(x) * self.w + shift)


def _context(sd_scheduler_config, start, end, solver="ddim"):
    schedule = NoiseSchedule.from_config(sd_scheduler_config)
    g = torch.Generator().manual_seed(0)
    latents, eps = torch.randn(3, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, generator=g)
    noise = StepNoise(start, end, torch.tensor([0.0, 2.0, 7.0]), eps, torch.zeros_like(eps))
    teacher = FakeTeacher()
    return TargetContext(
        x=schedule.add_noise(latents, eps, start), latents=latents, noise=noise,
        cond=Conditioning(torch.randn(3, 77, 8, generator=g)), uncond=Conditioning(torch.zeros(3, 77, 8)),
        schedule=schedule,
        solver=solver, teacher_ctx=lambda: contextlib.nullcontext(teacher),
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(OBJECTIVES))
@pytest.mark.parametrize("solver", ["ddim", "dpm_solver_pp_2s"])
def test_a_zero_length_step_returns_the_start_point(sd_scheduler_config, kind, solver):
    t = torch.tensor([999, 519, 39])
    c = _context(sd_scheduler_config, t, t, solver)
    torch.testing.assert_close(OBJECTIVES[kind].target_point(c), c.x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", list(OBJECTIVES))
def test_the_target_point_lies_at_t_n_and_moves_with_the_step(sd_scheduler_config, kind):
    start = torch.tensor([999, 519, 39])
    c = _context(sd_scheduler_config, start, start - 20)
    out = OBJECTIVES[kind].target_point(c)
    assert out.shape == c.x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - c.x).abs().max() > 1e-3  # a real step, not the start point
    if not OBJECTIVES[kind].needs_teacher:
        torch.testing.assert_close(out, c.schedule.add_noise(c.latents, c.noise.noise, c.noise.end))
    else:
        no_teacher = TargetContext(**{**c.__dict__, "teacher_ctx": None})
        with pytest.raises(ValueError, match="teacher"):
            OBJECTIVES[kind].target_point(no_teacher)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_is_a_fp32_distance(name):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    same = consistency_loss(a, a, name, 1e-3)
    assert same.dtype == torch.float32 and same.ndim == 0 and abs(same.item()) < 1e-6
    d = consistency_loss(a.half(), b.half(), name, 1e-3)
    assert d.dtype == torch.float32 and d.item() > 0
    assert consistency_loss(a, b, name, 1e-3).item() == pytest.approx(consistency_loss(b, a, name, 1e-3).item())
    assert consistency_loss(a, 2 * b, name, 1e-3) > consistency_loss(a, 1.01 * a, name, 1e-3)
