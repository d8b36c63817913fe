"""Student construction and the LCD/LCF consistency step on tiny models."""

from types import SimpleNamespace

import pytest
import torch

from lcm_distill.conditioning import Conditioning
from lcm_distill.engine import load_run_models
from lcm_distill.functional import NoiseSchedule, SkippingGrid, omega_embedding
from lcm_distill.models import Models, build_student
from lcm_distill.objectives import (
    ConsistencyStep,
    StepNoise,
    consistency_output,
    draw_step_noise,
    step_generator,
    teacher_pair,
)
from lcm_distill.testing import tiny_scheduler_config, tiny_unet


def step_of(student, target, teacher, schedule, cfg, omega_dim=32) -> ConsistencyStep:
    """The run's step object over bare networks (no VAE or text encoder: the tests hand it latents and embeddings)."""
    vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=[1, 1, 1, 1], latent_channels=4))
    models = Models(student, target, teacher, vae, None, None, {}, schedule, omega_dim)
    return ConsistencyStep(models, cfg, 64)


def test_zero_init_student_equals_teacher_for_any_omega():
    teacher = tiny_unet(None)
    student = build_student(teacher, 32, "zero")
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 77, 32, generator=g)
    t = torch.tensor([999, 500, 19])
    with torch.no_grad():
        ref = teacher(x, t, encoder_hidden_states=ctx).sample
        for w in (0.0, 2.0, 14.0):
            out = student(
                x, t, encoder_hidden_states=ctx, timestep_cond=omega_embedding(torch.full((3,), w), 32)
            ).sample
            assert torch.equal(out, ref)
        rand = build_student(teacher, 32, "random")
        out = rand(x, t, encoder_hidden_states=ctx, timestep_cond=omega_embedding(torch.full((3,), 8.0), 32)).sample
        assert not torch.allclose(out, ref)


def _noise(B, start, omega=4.0):
    g = torch.Generator().manual_seed(1)
    start = torch.tensor(start)
    grid = SkippingGrid(1000, 50)
    return StepNoise(start, grid.previous(start), torch.full((B,), omega), torch.randn(B, 4, 8, 8, generator=g),
                     torch.randn(B, 4, 8, 8, generator=g))  # fmt: skip


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("solver", ["ddim", "dpm_solver_2", "dpm_solver_pp_2s"])
@pytest.mark.parametrize("placement", ["paper", "guided"])
def test_lcd_step_gradients_flow_to_the_student_only(prediction_type, solver, placement):
    from lcm_distill.config import ObjectiveConfig

    schedule = NoiseSchedule.from_config(tiny_scheduler_config(prediction_type))
    teacher = tiny_unet(None).requires_grad_(False)
    student = build_student(teacher, 32, "random")
    target = build_student(teacher, 32, "random").requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    latents, ctx, unc = (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.randn(2, 77, 32, generator=g),
        torch.zeros(2, 77, 32),
    )

    cfg = ObjectiveConfig(solver=solver, cfg_placement=placement, loss="huber")
    loss, _ = step_of(student, target, teacher, schedule, cfg).loss(latents, Conditioning(ctx), Conditioning(unc),
                                                                    _noise(2, [999, 39]))
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert student.time_embedding.cond_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters()) and all(p.grad is None for p in target.parameters())


def test_target_at_t0_is_the_solver_point_whatever_the_network():
    """Boundary: c_skip(0) = 1, c_out(0) = 0, so f_target(x, 0) = x exactly (paper Eq. 9)."""
    schedule = NoiseSchedule.from_config(tiny_scheduler_config())
    net = tiny_unet(32)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        f = consistency_output(
            net, x, torch.tensor([0, 0]), Conditioning(torch.randn(2, 77, 32)), omega_embedding(torch.ones(2), 32),
            schedule,
        )
    assert torch.equal(f, x)


def test_teacher_pair_is_one_batched_forward_matching_two():
    schedule = NoiseSchedule.from_config(tiny_scheduler_config("v_prediction"))
    teacher = tiny_unet(None)
    calls = []
    teacher.register_forward_hook(lambda m, a, k: calls.append(a[0].shape[0]))
    g = torch.Generator().manual_seed(3)
    xc, xu = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    ctx, unc, t = torch.randn(2, 77, 32, generator=g), torch.randn(2, 77, 32, generator=g), torch.tensor([999, 259])
    with torch.no_grad():
        (x0c, _), (x0u, _) = teacher_pair(teacher, Conditioning(ctx), Conditioning(unc), schedule)(xc, xu, t)
        assert calls == [4]
        a, s = schedule.alpha_sigma(t)
        ref_c = a * xc - s * teacher(xc, t, encoder_hidden_states=ctx).sample  # v-prediction x0
        ref_u = a * xu - s * teacher(xu, t, encoder_hidden_states=unc).sample
    torch.testing.assert_close(x0c, ref_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x0u, ref_u, atol=1e-5, rtol=1e-5)


def test_lcf_points_share_noise_at_grid_timesteps(monkeypatch):
    from lcm_distill import objectives
    from lcm_distill.config import ObjectiveConfig

    schedule = NoiseSchedule.from_config(tiny_scheduler_config())
    seen = []
    real = objectives.consistency_output

    def spy(unet, x, t, *a):
        seen.append((x.detach().clone(), t.clone()))
        return real(unet, x, t, *a)

    monkeypatch.setattr(objectives, "consistency_output", spy)
    net = tiny_unet(32)
    latents = torch.randn(2, 4, 8, 8)
    noise = _noise(2, [519, 19])
    lcf = step_of(net, net, None, schedule, ObjectiveConfig(kind="lcf"))
    lcf.loss(latents, Conditioning(torch.zeros(2, 77, 32)), None, noise)
    (x_s, s), (x_t, t) = seen
    assert s.tolist() == [519, 19] and t.tolist() == [499, 0]
    for x, tt in ((x_s, s), (x_t, t)):
        a, sg = schedule.alpha_sigma(tt)
        torch.testing.assert_close((x - a * latents) / sg, noise.noise, atol=1e-4, rtol=1e-4)  # same eps at both


def test_step_noise_is_a_pure_function_of_seed_and_step():
    grid = SkippingGrid(1000, 50)
    from lcm_distill.config import ObjectiveConfig

    a = draw_step_noise(step_generator(0, 5), 4, (4, 2, 2), grid, ObjectiveConfig())
    b = draw_step_noise(step_generator(0, 5), 4, (4, 2, 2), grid, ObjectiveConfig())
    c = draw_step_noise(step_generator(0, 6), 4, (4, 2, 2), grid, ObjectiveConfig())
    assert torch.equal(a.noise, b.noise) and torch.equal(a.start, b.start) and not torch.equal(a.noise, c.noise)
    half = a.slice(2, 4)
    assert torch.equal(half.omega, a.omega[2:]) and half.noise.shape[0] == 2


def test_lora_student_trains_adapters_only_and_teacher_is_the_base(make_cfg):
    cfg = make_cfg("model.lora.enabled=true", "train.ema_decay=0", "model.lora.rank=4", "model.lora.alpha=4")
    models = load_run_models(cfg)
    assert models.omega_dim is None and models.target is None and models.teacher is None
    trainable = [n for n, p in models.student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for p in (p for n, p in models.student.named_parameters() if "lora_B" in n):
            p.fill_(0.1)  # make the adapter matter
        x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
        with models.teacher_unet() as teacher:
            base = teacher(x, t, encoder_hidden_states=ctx).sample
        adapted = models.student(x, t, encoder_hidden_states=ctx).sample
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel.from_pretrained(cfg.model.teacher, subfolder="unet")
    with torch.no_grad():
        torch.testing.assert_close(base, plain(x, t, encoder_hidden_states=ctx).sample, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base, adapted)
