import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from lcm_distill.functional import SkippingGrid, timestep_weights


def test_grid_equals_ddim_trailing(sd_scheduler_config):
    grid = SkippingGrid(1000, 50)
    assert grid.k == 20
    assert grid.timesteps[:3].tolist() == [19, 39, 59] and grid.timesteps[-1].item() == 999
    ddim = DDIMScheduler(**{**sd_scheduler_config, "timestep_spacing": "trailing"})
    for n in (10, 20, 50, 100):
        ddim.set_timesteps(n)
        assert torch.equal(SkippingGrid(1000, n).timesteps, ddim.timesteps.flip(0).long())


def test_n_must_divide_t():
    with pytest.raises(ValueError, match="num_points"):
        SkippingGrid(1000, 30)
    with pytest.raises(ValueError, match="num_points"):
        SkippingGrid(1000, 0)


def test_sample_pairs_uniform_on_grid_and_k_apart():
    grid = SkippingGrid(1000, 50)
    g = torch.Generator().manual_seed(0)
    start, end = grid.sample_pairs(50_000, generator=g)
    assert set(start.unique().tolist()) == set(grid.timesteps.tolist())
    counts = torch.bincount((start + 1) // 20 - 1, minlength=50).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    assert torch.equal(end, (start - 20).clamp_min(0))
    assert end.min().item() == 0  # first grid step lands on t = 0
    again, _ = grid.sample_pairs(50_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(start, again)


def test_high_noise_sampling_follows_the_ramp():
    """objective.timestep_sampling=high_noise: p(grid index i) = (i + 1) / sum, so t = 999 is drawn N times as often
    as t = k - 1 (fails if the ramp is reversed toward low noise, flat, or off the grid)."""
    grid = SkippingGrid(1000, 50)
    w = timestep_weights(50, "high_noise")
    assert w.sum().item() == pytest.approx(1.0) and w[-1].item() == pytest.approx(50 * w[0].item())
    assert torch.equal(timestep_weights(50, "uniform"), torch.full((50,), 1 / 50, dtype=torch.float64))
    start, end = grid.sample_pairs(200_000, generator=torch.Generator().manual_seed(0), sampling="high_noise")
    assert set(start.unique().tolist()) <= set(grid.timesteps.tolist())
    assert torch.equal(end, (start - 20).clamp_min(0))
    freq = torch.bincount((start + 1) // 20 - 1, minlength=50).double() / start.numel()
    assert torch.allclose(freq, w, atol=2.5e-3), (freq - w).abs().max()
    index = ((start + 1) // 20 - 1).double()
    assert index.mean().item() == pytest.approx((w * torch.arange(50)).sum().item(), abs=0.1)  # ~32.7, not 24.5
    again, _ = grid.sample_pairs(200_000, generator=torch.Generator().manual_seed(0), sampling="high_noise")
    assert torch.equal(start, again)
    with pytest.raises(ValueError, match=r"objective\.timestep_sampling"):
        grid.sample_pairs(4, sampling="low_noise")


def test_uniform_sampling_keeps_the_papers_random_stream():
    """The default draw is unchanged by the sampling switch: runs started before it reproduce bit for bit."""
    a, _ = SkippingGrid(1000, 50).sample_pairs(64, generator=torch.Generator().manual_seed(3))
    index = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, index * 20 + 19)


@pytest.mark.parametrize("strength", [1.0, 0.8, 0.5, 0.3, 0.25])
def test_inference_timesteps_match_lcm_scheduler(sd_scheduler_config, strength):
    grid = SkippingGrid(1000, 50)
    sched = LCMScheduler(**sd_scheduler_config)
    usable = int(50 * strength)
    for n in range(1, usable + 1):
        sched.set_timesteps(n, strength=strength)
        assert grid.inference_timesteps(n, strength) == sched.timesteps.tolist(), (n, strength)


def test_known_schedules():
    grid = SkippingGrid(1000, 50)
    assert grid.inference_timesteps(1) == [999]
    assert grid.inference_timesteps(2) == [999, 499]
    assert grid.inference_timesteps(4) == [999, 759, 499, 259]
    assert grid.inference_timesteps(4, strength=0.8) == [799, 599, 399, 199]
    assert SkippingGrid(1000, 100).inference_timesteps(4) == [999, 749, 499, 249]


def test_bad_inference_requests_explain_themselves():
    grid = SkippingGrid(1000, 50)
    with pytest.raises(ValueError, match="at least 1"):
        grid.inference_timesteps(0)
    with pytest.raises(ValueError, match="exceeds"):
        grid.inference_timesteps(51)
    with pytest.raises(ValueError, match="strength"):
        grid.inference_timesteps(2, strength=0.0)
    with pytest.raises(ValueError, match="strength"):
        grid.inference_timesteps(2, strength=1.5)
    assert grid.validate([999, 499]) == [999, 499]
    with pytest.raises(ValueError, match="not on the training grid"):
        grid.validate([999, 500])
    with pytest.raises(ValueError, match="descending"):
        grid.validate([499, 999])
