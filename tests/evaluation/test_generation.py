"""Seeded generation and scheduler swapping for teacher baselines."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler

from lcm_distill.evaluation import configure_scheduler, generate, load_pipeline

PROMPTS = ["a red digit 1", "a blue digit 2", "a green digit 3"]


def test_generate_shape_range_and_seeding(tiny_pipe):
    configure_scheduler(tiny_pipe, "teacher-ddim")
    a = generate(tiny_pipe, PROMPTS, 2, 3.0, seed=5, batch_size=2)
    assert a.shape == (3, 3, 16, 16) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(generate(tiny_pipe, PROMPTS, 2, 3.0, seed=5, batch_size=2), a)
    # per-image seeds: the batch size does not change the images
    torch.testing.assert_close(generate(tiny_pipe, PROMPTS, 2, 3.0, seed=5, batch_size=3), a, atol=1e-5, rtol=0)
    # image i uses seed + i, so shifting the seed shifts the images
    shifted = generate(tiny_pipe, PROMPTS[1:], 2, 3.0, seed=6, batch_size=1)
    torch.testing.assert_close(shifted[0], generate(tiny_pipe, PROMPTS[1:2], 2, 3.0, seed=6, batch_size=1)[0])
    assert not torch.allclose(generate(tiny_pipe, PROMPTS, 2, 3.0, seed=7, batch_size=2), a)
    with pytest.raises(ValueError, match="num_inference_steps"):
        generate(tiny_pipe, PROMPTS, 0, 3.0)


@pytest.mark.parametrize(
    ("kind", "cls", "extra"),
    [("teacher-ddim", DDIMScheduler, {}),
     ("teacher-dpmpp", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
     ("teacher-dpm", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver", "solver_order": 2}),
     ("lcm", LCMScheduler, {})],
)
def test_scheduler_swap_keeps_teacher_schedule(tiny_pipe, kind, cls, extra):
    before = dict(tiny_pipe.scheduler.config)
    configure_scheduler(tiny_pipe, kind, timestep_spacing="trailing")
    sch = tiny_pipe.scheduler
    assert isinstance(sch, cls)
    for key in ("beta_start", "beta_end", "beta_schedule", "prediction_type", "num_train_timesteps"):
        assert sch.config[key] == before[key]
    for key, value in extra.items():
        assert sch.config[key] == value
    if kind != "lcm":
        assert sch.config.timestep_spacing == "trailing"
        sch.set_timesteps(1)
        assert int(sch.timesteps[0]) == 999  # trailing: one step starts from pure noise
    out = generate(tiny_pipe, PROMPTS[:1], 2, 2.0)
    assert torch.isfinite(out).all()
    configure_scheduler(tiny_pipe, "teacher-ddim")


def test_scheduler_swap_errors(tiny_pipe):
    with pytest.raises(ValueError, match="kind"):
        configure_scheduler(tiny_pipe, "teacher-euler")
    with pytest.raises(ValueError, match="timestep_spacing"):
        configure_scheduler(tiny_pipe, "teacher-ddim", timestep_spacing="sideways")


def test_load_pipeline_for_each_kind(tiny_sd_dir, lcm_dir):
    teacher = load_pipeline(str(tiny_sd_dir), "teacher-dpmpp")
    assert type(teacher).__name__ == "StableDiffusionPipeline"
    assert isinstance(teacher.scheduler, DPMSolverMultistepScheduler)
    student = load_pipeline(str(lcm_dir), "lcm")
    assert isinstance(student.scheduler, LCMScheduler)
    assert student.unet.config.time_cond_proj_dim == 32
    assert type(student).__name__ in ("LCMPipeline", "LatentConsistencyModelPipeline")
    assert generate(student, PROMPTS[:2], 1, 9.0).shape == (2, 3, 16, 16)
