"""benchmarks/lora_collapse.py's pieces: every variant is a valid train_lcd.py run that differs from the collapsing
setting in exactly its one change, the fine retrace checks every step, the collapse rule is the engine's warning
rule, and the tables read tensorboard scalars. The benchmark itself (~10 min on 2 CPU cores) is in RESULTS.md."""

from __future__ import annotations

import pytest

from lcm_distill.cli.train import parse_run


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("lora_collapse")


def test_each_variant_changes_one_setting_of_the_collapsing_run(bench, tmp_path):
    plan = bench.Plan(tmp_path, [2], 30, 5, 1)
    base = None
    for variant in bench.VARIANTS:
        step = bench.train_step(plan, variant, 2, tmp_path / "ref")
        cfg = parse_run(step.argv[1:], "lcd", step.argv[0])[1]
        assert cfg.model.lora.enabled and cfg.train.seed == 2 and cfg.train.quality_every == 5
        assert cfg.train.log_every == 1 and cfg.train.report_to == "tensorboard"
        flat = {k: v for k, v in cfg.to_dict().items() if k != "train"} | {
            k: v for k, v in cfg.to_dict()["train"].items() if k != "output_dir"}  # fmt: skip
        if base is None:
            base, base_cfg = flat, cfg
            assert cfg.train.ema_decay == 0 and cfg.optim.learning_rate == 1e-3
            continue
        changed = [k for k in flat if flat[k] != base[k]]
        assert len(changed) == 1, (variant, changed)
    fine = bench.train_step(plan, next(iter(bench.VARIANTS)), 2, tmp_path / "ref", fine_until=12)
    cfg = parse_run(fine.argv[1:], "lcd", fine.argv[0])[1]
    assert cfg.train.quality_every == 1 and cfg.train.max_train_steps == 12
    assert cfg.train.output_dir != base_cfg.train.output_dir


def test_the_collapse_rule_is_the_engines_warning_rule(bench):
    from lcm_distill.engine.quality import DEGRADED_FACTOR

    assert bench.first_collapse({5: 4.0, 10: 3.0, 15: 3.0 * DEGRADED_FACTOR, 20: 50.0}) == 20
    assert bench.first_collapse({5: 4.0, 10: 3.0, 15: 3.0 * DEGRADED_FACTOR + 0.01}) == 15
    assert bench.first_collapse({5: 4.0, 10: 7.9, 15: 6.0}) is None  # worse than the best, not 2x worse


def test_tables_read_the_runs_tensorboard_scalars(bench, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    writer = SummaryWriter(str(run / "logs" / "lcd"))
    for step in range(1, 11):
        writer.add_scalar("loss", 0.02, step)
        writer.add_scalar("grad_norm", 0.1 * step, step)
        writer.add_scalar("lr", 1e-3, step)
        if step % 2 == 0:
            writer.add_scalar("quality_fid", 4.0 if step < 8 else 20.0, step)
    writer.close()
    s = bench.scalars(run)
    assert set(s) == {"loss", "grad_norm", "lr", "quality_fid"} and len(s["grad_norm"]) == 10
    row = bench.summary_row("no target", 2, s)
    assert "| 4.00 (step 2) | step 8 (20.0) | 20.00 | 20.00 | 0.4 / 0.7 |" in row  # median, max before step 8
    table = bench.window_table(s, 8, 3)
    assert table[2].startswith("| 5 |  | 0.02 | 0.5 | 0.001 |") and table[-1].startswith("| 8 | 20 |")
