import pytest
import torch
from diffusers import LatentConsistencyModelPipeline, LCMScheduler

from lcm_distill.functional import (
    boundary_scalings,
    cfg_combine,
    consistency_function,
    consistency_loss,
    omega_embedding,
    omega_from_guidance_scale,
    pseudo_huber_ict_loss,
    pseudo_huber_loss,
    sample_omega,
)


def test_scalings_match_lcm_scheduler_everywhere(sd_scheduler_config):
    sched = LCMScheduler(**sd_scheduler_config)
    t = torch.arange(1000)
    c_skip, c_out = boundary_scalings(t)
    ref_skip, ref_out = sched.get_scalings_for_boundary_condition_discrete(t.float())
    torch.testing.assert_close(c_skip, ref_skip, atol=1e-7, rtol=0)
    torch.testing.assert_close(c_out, ref_out, atol=1e-7, rtol=0)
    c_skip64, c_out64 = boundary_scalings(t.double())
    ref64 = sched.get_scalings_for_boundary_condition_discrete(t.double())
    assert torch.equal(c_skip64, ref64[0]) and torch.equal(c_out64, ref64[1])


def test_boundary_condition_and_reference_values():
    c_skip, c_out = boundary_scalings(torch.tensor([0, 1, 19, 999]))
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # f(x, 0) = x exactly
    assert c_skip[1].item() == pytest.approx(2.494e-3, rel=1e-3)
    assert c_out[1].item() == pytest.approx(0.9987523556, abs=1e-7)
    assert c_skip[2].item() == pytest.approx(6.925e-6, rel=1e-3)
    assert c_skip[3].item() == pytest.approx(2.505e-9, rel=1e-3)
    x, x0 = torch.randn(4, 4, 2, 2), torch.randn(4, 4, 2, 2)
    f = consistency_function(x, x0, c_skip, c_out)
    assert torch.equal(f[0], x[0])  # boundary: the network plays no part at t = 0
    torch.testing.assert_close(f[3], x0[3], atol=1e-7, rtol=0)


@pytest.mark.parametrize("dim", [32, 256, 257])
def test_omega_embedding_bit_identical_to_pipeline(dim):
    w = torch.tensor([0.0, 1.0, 6.5, 7.5, 14.0])
    ours = omega_embedding(w, dim)
    ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim)
    assert ours.shape == (5, dim)
    assert torch.equal(ours, ref)


def test_omega_embedding_reference_values():
    e = omega_embedding(torch.tensor([7.5]), 256)[0]
    torch.testing.assert_close(e[:4], torch.tensor([-0.851236, 0.842131, 0.011876, 0.992377]), atol=1e-5, rtol=0)
    torch.testing.assert_close(e[128:132], torch.tensor([-0.524783, 0.539273, -0.999929, -0.123241]), atol=1e-5, rtol=0)
    zero = omega_embedding(torch.tensor([0.0]), 256)[0]
    assert torch.equal(zero[:128], torch.zeros(128)) and torch.equal(zero[128:], torch.ones(128))
    with pytest.raises(ValueError, match="1-D"):
        omega_embedding(torch.tensor(7.5), 256)


def test_guidance_scale_convention():
    assert omega_from_guidance_scale(8.5) == 7.5
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    omega = torch.tensor([0.0, 2.0, 7.0])
    mixed = cfg_combine(c, u, omega)
    torch.testing.assert_close(mixed[0], c[0])
    torch.testing.assert_close(mixed[1], 3 * c[1] - 2 * u[1], atol=1e-6, rtol=0)
    # diffusers' form with g = omega + 1: u + g (c - u)
    torch.testing.assert_close(mixed[2], u[2] + 8.0 * (c[2] - u[2]), atol=1e-6, rtol=0)


def test_sample_omega_range_and_seed():
    w = sample_omega(10_000, 2.0, 14.0, generator=torch.Generator().manual_seed(0))
    assert w.dtype == torch.float32 and w.min() >= 2.0 and w.max() <= 14.0
    assert abs(w.mean().item() - 8.0) < 0.15
    assert torch.equal(w, sample_omega(10_000, 2.0, 14.0, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(sample_omega(4, 8.0, 8.0), torch.full((4,), 8.0))
    with pytest.raises(ValueError, match="omega_min"):
        sample_omega(2, 3.0, 1.0)


def test_losses():
    zero = torch.zeros(1)
    assert pseudo_huber_loss(zero, zero).item() == 0.0
    assert pseudo_huber_loss(torch.tensor([1e-3]), zero).item() == pytest.approx(4.142136e-4, rel=1e-5)
    assert pseudo_huber_loss(torch.tensor([0.1]), zero).item() == pytest.approx(0.0990050, rel=1e-5)
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert consistency_loss(a, b, "l2").item() == pytest.approx(torch.nn.functional.mse_loss(a, b).item(), rel=1e-6)
    assert consistency_loss(a, b, "l1").item() == pytest.approx(torch.nn.functional.l1_loss(a, b).item(), rel=1e-6)
    assert consistency_loss(a.half(), b.half(), "huber").dtype == torch.float32
    with pytest.raises(ValueError, match="loss_type"):
        consistency_loss(a, b, "l3")


def test_pseudo_huber_is_improved_cts_per_sample_form():
    """objective.loss=pseudo_huber: mean_b (sqrt(||d_b||^2 + c^2) - c) / sqrt(D), c = 0.00054 sqrt(D), D = C*h*w.
    Hand-computed on two samples of D = 4: fails for the element-wise form, an unscaled c, or a missing 1/sqrt(D)."""
    zero = torch.zeros(2, 1, 2, 2)
    d = torch.tensor([[3e-4, 3e-4, 3e-4, 3e-4], [0.3, 0.0, -0.4, 0.0]]).reshape(2, 1, 2, 2)
    c = 0.00054 * 2.0  # sqrt(D) = 2
    norms = [(4 * 9e-8) ** 0.5, 0.5]
    expected = sum((n**2 + c**2) ** 0.5 - c for n in norms) / 2 / 2.0
    assert pseudo_huber_ict_loss(d, zero).item() == pytest.approx(expected, rel=1e-5)
    assert consistency_loss(d, zero, "pseudo_huber", huber_c=0.5).item() == pytest.approx(expected, rel=1e-5)
    elementwise = torch.mean(torch.sqrt(d**2 + 0.00054**2) - 0.00054).item()
    assert abs(elementwise - expected) > 0.2 * expected
    small = ((norms[0] ** 2 + c**2) ** 0.5 - c) / 2.0  # near c, where its scale matters
    assert pseudo_huber_ict_loss(d[:1], zero[:1]).item() == pytest.approx(small, rel=1e-5)
    unscaled = ((norms[0] ** 2 + 0.00054**2) ** 0.5 - 0.00054) / 2.0
    assert abs(unscaled - small) > 0.5 * small
    assert pseudo_huber_ict_loss(zero, zero).item() == 0.0
    # per sample: scaling one sample's error by 10 scales its gradient by ~1 (unit length), not by 10 as l2 does
    x = torch.stack([d[1], 10 * d[1]]).requires_grad_()
    pseudo_huber_ict_loss(x, zero).backward()
    g = x.grad.flatten(1).norm(dim=1)
    assert g[0].item() == pytest.approx(g[1].item(), rel=0.05)
