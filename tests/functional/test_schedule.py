import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from lcm_distill.functional import NoiseSchedule, from_x0_eps, to_x0_eps

# Reference values of the SD schedule (scaled_linear 0.00085..0.012, T = 1000), as diffusers computes them.
TABLE = {
    0: (0.9991499782, 3.534699),
    1: (0.9982960224, 3.186542),
    19: (0.9822439551, 2.006557),
    259: (0.6589752436, 0.329365),
    499: (0.2776694298, -0.478026),
    979: (0.0059127659, -2.562356),
    999: (0.0046600951, -2.682024),
}


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
    ],
)
def test_alphas_cumprod_bit_identical_to_diffusers(config):
    ours = NoiseSchedule.from_config(config).alphas_cumprod
    ref = DDPMScheduler(**config).alphas_cumprod
    assert ours.dtype == torch.float32
    assert torch.equal(ours, ref)


def test_sd_schedule_reference_values(sd_scheduler_config):
    s = NoiseSchedule.from_config(sd_scheduler_config)
    for t, (abar, lam) in TABLE.items():
        assert s.alphas_cumprod[t].item() == pytest.approx(abar, abs=1e-9)
        assert s.lambdas[t].item() == pytest.approx(lam, abs=1e-5)


def test_unknown_beta_schedule_names_the_key():
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule.from_config({"beta_schedule": "cosine-ish"})
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule.from_config({"beta_schedule": "linear"}, prediction_type="x0")


def test_add_noise_matches_ddpm(sd_scheduler_config):
    s = NoiseSchedule.from_config(sd_scheduler_config)
    ref = DDPMScheduler.from_config(sd_scheduler_config)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 19, 250, 500, 979, 999])
    torch.testing.assert_close(s.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), atol=1e-6, rtol=0)
    # v target equals diffusers' get_velocity.
    a, sg = s.alpha_sigma(t)
    torch.testing.assert_close(
        from_x0_eps(x0, noise, a, sg, "v_prediction"), ref.get_velocity(x0, noise, t), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_matches_ddim_and_round_trips(sd_scheduler_config, prediction_type):
    cfg = {**sd_scheduler_config, "prediction_type": prediction_type}
    s = NoiseSchedule.from_config(cfg)
    ddim = DDIMScheduler(**cfg)
    ddim.set_timesteps(50)
    g = torch.Generator().manual_seed(1)
    x, out = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    for t in (999, 499, 19):
        a, sg = s.alpha_sigma(torch.tensor([t]))
        x0, eps = to_x0_eps(out, x, a, sg, prediction_type)
        ref = ddim.step(out, t, x, eta=0.0).pred_original_sample
        torch.testing.assert_close(x0, ref, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(a * x0 + sg * eps, x, atol=2e-5, rtol=1e-5)  # consistent pair
        torch.testing.assert_close(from_x0_eps(x0, eps, a, sg, prediction_type), out, atol=5e-4, rtol=1e-4)


def test_gathers_stay_fp32(sd_scheduler_config):
    s = NoiseSchedule.from_config(sd_scheduler_config)
    a, sg = s.alpha_sigma(torch.tensor([5, 7]))
    x = torch.randn(2, 4, 8, 8, dtype=torch.bfloat16)
    assert a.dtype == sg.dtype == torch.float32
    assert to_x0_eps(x, x, a, sg, "epsilon")[0].dtype == torch.float32


@pytest.mark.parametrize(
    ("s", "t", "t_mid"), [(999, 979, 989.0712), (519, 499, 509.0263), (39, 19, 27.4306), (19, 0, 3.5845)]
)
def test_lambda_midpoint_timestep(sd_scheduler_config, s, t, t_mid):
    from lcm_distill.functional import lambda_midpoint

    sched = NoiseSchedule.from_config(sd_scheduler_config)
    _, tm = lambda_midpoint(sched, torch.tensor([s]), torch.tensor([t]))
    assert tm.item() == pytest.approx(t_mid, abs=1e-3)


def test_continuous_timesteps_interpolate_lambda(sd_scheduler_config):
    s = NoiseSchedule.from_config(sd_scheduler_config)
    t_int = torch.tensor([0, 19, 500, 999])
    a_i, s_i = s.alpha_sigma(t_int)
    a_f, s_f = s.alpha_sigma(t_int.float())
    torch.testing.assert_close(a_f, a_i, atol=1e-6, rtol=0)
    torch.testing.assert_close(s_f, s_i, atol=1e-6, rtol=0)
    lam = s.lambdas
    mid = s.lambda_at(torch.tensor([499.25]))
    torch.testing.assert_close(mid, 0.75 * lam[499:500] + 0.25 * lam[500:501])
    t = torch.tensor([123.4, 987.6])
    assert torch.allclose(s.timestep_for_lambda(s.lambda_at(t)), t)
