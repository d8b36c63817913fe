"""The skipping-step curriculum (functional/curriculum.py) and its target EMA: the pure schedule, the config checks,
and that a run really draws its pairs from the stage's coarse grid and updates the target at the stage's mu."""

from __future__ import annotations

import pytest
import torch

from lcm_distill.config import ConfigError, load_config
from lcm_distill.engine import load_run_models
from lcm_distill.engine.step import TrainStep
from lcm_distill.functional.curriculum import (
    curriculum_ema,
    curriculum_points,
    curriculum_stages,
)
from lcm_distill.objectives import ConsistencyStep


def test_stages_double_and_stay_nested_in_the_final_grid():
    assert curriculum_stages(50, 5) == [5, 10, 25, 50]  # 20 and 40 do not divide 50: rounded down, repeats dropped
    assert curriculum_stages(40, 5) == [5, 10, 20, 40]
    assert curriculum_stages(50, 50) == [50]
    assert curriculum_stages(50, 1) == [1, 2, 5, 10, 25, 50]
    for final, start in [(50, 5), (40, 2), (100, 4)]:
        assert all(final % n == 0 for n in curriculum_stages(final, start))
    with pytest.raises(ValueError, match="curriculum_start_points=7"):
        curriculum_stages(50, 7)


def test_points_follow_the_step_and_end_at_num_points():
    pts = [curriculum_points(s, 50, "doubling", 5, 10) for s in range(0, 60, 5)]
    assert pts == [5, 5, 10, 10, 25, 25, 50, 50, 50, 50, 50, 50]
    assert curriculum_points(0, 50, "none", 5, 10) == 50 == curriculum_points(10**6, 50, "doubling", 5, 10)
    with pytest.raises(ValueError, match=r"objective\.curriculum='halving'"):
        curriculum_points(0, 50, "halving")
    with pytest.raises(ValueError, match="curriculum_stage_steps"):
        curriculum_points(0, 50, "doubling", 5, 0)


def test_tied_ema_is_mu_at_the_final_stage_and_faster_before():
    assert curriculum_ema(0.95, 50, 50, "curriculum") == pytest.approx(0.95)
    assert curriculum_ema(0.95, 5, 50, "curriculum") == pytest.approx(0.95**10)  # not 0.95 (fixed) nor 0.95^(1/10)
    assert curriculum_ema(0.95, 5, 50, "fixed") == 0.95
    assert curriculum_ema(0.0, 5, 50, "curriculum") == 0.0
    with pytest.raises(ValueError, match=r"train\.ema_schedule"):
        curriculum_ema(0.9, 5, 50, "cosine")




@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["objective.curriculum=halving"], "objective.curriculum"),
        (["objective.curriculum=doubling", "objective.curriculum_start_points=7"], "curriculum_start_points"),
        (["objective.curriculum=doubling", "objective.curriculum_stage_steps=0"], "objective.curriculum_stage_steps"),
        (["train.ema_schedule=curriculum"], "train.ema_schedule"),  # without a curriculum to follow
        (["train.ema_schedule=warmup"], "train.ema_schedule"),
    ],
)
def test_bad_curriculum_settings_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, ["model.teacher=t", "data.dataset=d", *overrides])


def test_a_run_draws_from_the_stage_grid_and_updates_the_target_at_the_stage_mu(make_cfg):
    cfg = make_cfg("objective.num_points=20", "objective.curriculum=doubling", "objective.curriculum_start_points=5",
                   "objective.curriculum_stage_steps=2", "train.ema_decay=0.9",
                   "train.ema_schedule=curriculum")  # fmt: skip
    models = load_run_models(cfg)
    step = ConsistencyStep(models, cfg.objective, cfg.data.resolution)
    assert [step.points_at(s) for s in range(7)] == [5, 5, 10, 10, 20, 20, 20]
    coarse = step.draw(0, 0, 256)  # k = 1000 / 5 = 200: t_{n+k} in {199, ..., 999}, t_n = t_{n+k} - 200
    assert set(coarse.start.tolist()) == {199, 399, 599, 799, 999}
    assert torch.equal(coarse.start - coarse.end, torch.full((256,), 200).minimum(coarse.start))
    final = step.draw(0, 4, 256)
    assert set(final.start.tolist()) == set(step.grid.timesteps.tolist()) and step.grid.k == 50
    ts = TrainStep(None, step, None, None, [], seed=0, batch_size=1, ema_decay=0.9, ema_schedule="curriculum")
    assert [round(ts.ema_at(s), 6) for s in (0, 2, 4)] == [round(0.9**4, 6), round(0.9**2, 6), 0.9]


def test_a_run_draws_high_noise_pairs_when_asked(make_cfg):
    """objective.timestep_sampling=high_noise reaches the step's draw (with the curriculum's coarse grid too); the
    uniform run's draw is unchanged."""
    base = ["objective.num_points=20", "objective.curriculum=doubling", "objective.curriculum_start_points=5",
            "objective.curriculum_stage_steps=2"]  # fmt: skip
    cfg, hi_cfg = make_cfg(*base), make_cfg(*base, "objective.timestep_sampling=high_noise")
    models = load_run_models(cfg)
    uniform = ConsistencyStep(models, cfg.objective, cfg.data.resolution)
    high = ConsistencyStep(models, hi_cfg.objective, hi_cfg.data.resolution)
    for s, k in ((0, 200), (4, 50)):
        u, h = uniform.draw(0, s, 4096), high.draw(0, s, 4096)
        n = 1000 // k
        p = torch.arange(1, n + 1, dtype=torch.float64) / (n * (n + 1) / 2)
        expected_mean = float((p * (torch.arange(1, n + 1) * k - 1)).sum())
        assert abs(h.start.double().mean().item() - expected_mean) < 0.03 * expected_mean, (s, h.start.double().mean())
        assert u.start.double().mean().item() < h.start.double().mean().item() - 0.1 * k
        assert torch.equal(h.end, (h.start - k).clamp_min(0))
        assert torch.equal(u.start, uniform.draw(0, s, 4096).start)


@pytest.mark.parametrize("recipe", ["lcf_tiny_cpu", "lcf_pokemon", "lcf_pokemon_lora", "lcf_simpsons",
                                    "lcf_simpsons_lora"])  # fmt: skip
def test_shipped_lcf_recipes_use_the_curriculum_and_lcd_recipes_do_not(recipe):
    from pathlib import Path

    root = Path(__file__).parents[2] / "configs"
    cfg = load_config(root / f"{recipe}.yaml")
    assert cfg.objective.kind == "lcf" and cfg.objective.curriculum == "doubling"
    assert curriculum_stages(cfg.objective.num_points, cfg.objective.curriculum_start_points)[-1] == 50
    assert load_config(root / "lcd_sd21_base_512.yaml").objective.curriculum == "none"  # LCD: paper grid
