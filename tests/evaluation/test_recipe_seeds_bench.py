"""benchmarks/recipe_seeds.py's pieces: each cell is the shipped tiny recipe with only the seed (and, for LCF, the
student and data it starts from) changed, and the step-robustness call follows the spread rule.
The benchmark itself (~5 min on 2 CPU cores) is measured in benchmarks/RESULTS.md."""

from __future__ import annotations

import pytest

from lcm_distill.cli.train import parse_run


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("recipe_seeds")


@pytest.mark.parametrize("recipe", ["lcd", "lcf"])
def test_cells_are_the_shipped_recipe_with_another_seed(bench, tmp_path, recipe):
    plan = bench.Plan(tmp_path, [0, 5], 20, 1)
    work = bench.chains(plan, recipe)
    script, config = bench.RECIPES[recipe]
    shipped = parse_run(["--config", config], recipe, script)[1]
    for chain, seed in zip(work, (0, 5), strict=True):
        cfg = parse_run(chain[0].argv[1:], recipe, chain[0].argv[0])[1]
        assert cfg.train.seed == seed and cfg.objective == shipped.objective and cfg.optim == shipped.optim
        assert cfg.train.max_train_steps == shipped.train.max_train_steps
        if recipe == "lcf":
            assert cfg.model.student == str(plan.run_dir("lcd", 0) / "target")
        assert "--kind" in chain[1].argv and str(chain[1].done).endswith("report.json")


def test_step_robust_call(bench):
    assert bench.step_robust({1: (3.0, 0.1), 2: (2.5, 0.1), 4: (2.6, 0.1), 8: (2.4, 0.1)}) == "yes"  # 2.6 within
    assert bench.step_robust({1: (3.0, 0.1), 2: (2.5, 0.1), 4: (3.0, 0.1), 8: (2.4, 0.1)}) == "no (4 > 2 steps)"
