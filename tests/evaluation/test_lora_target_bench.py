"""benchmarks/lora_target.py's pieces on synthetic reports: every cell is a valid train_lcd.py command with the
target switch, the summary is mean ± sample std per step count, and a difference is called only beyond the spread.
The benchmark itself (~30 min on 2 CPU cores) is measured in benchmarks/RESULTS.md."""

from __future__ import annotations

import pytest

from lcm_distill.cli.train import parse_run


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("lora_target")


def _report(fids, accs):
    return {"results": [{"steps": s, "fid": f, "scores": {"prompt_accuracy": a}}
                        for s, f, a in zip((1, 2, 4, 8), fids, accs, strict=True)]}  # fmt: skip


def test_cells_are_valid_runs_with_the_target_switch(bench, tmp_path):
    plan = bench.Plan(tmp_path, [0, 1], [0.0, 0.95], 10, 20, 1)
    work = bench.chains(plan, tmp_path / "ref")
    assert len(work) == 4 and all(len(chain) == 2 for chain in work)
    seen = set()
    for chain in work:
        argv = chain[0].argv
        cfg = parse_run(argv[1:], "lcd", argv[0])[1]
        assert cfg.model.lora.enabled and cfg.train.max_train_steps == 10
        seen.add((cfg.train.ema_decay, cfg.train.seed))
        assert "--steps" in chain[1].argv and str(chain[1].done).endswith("report.json")
    assert seen == {(0.0, 0), (0.95, 0), (0.0, 1), (0.95, 1)}


def test_summary_and_the_spread_rule(bench, tmp_path):
    reports = {0.0: [_report([3, 4, 6, 8], [0.9] * 4), _report([5, 6, 8, 10], [0.8] * 4)],
               0.95: [_report([3, 3, 3, 3], [1.0] * 4), _report([3.2, 3.2, 3.2, 3.2], [1.0] * 4)]}  # fmt: skip
    s = bench.summarise(reports)
    assert s[0.0]["fid"][1] == pytest.approx((4.0, 2**0.5, 3.0, 5.0))
    assert s[0.95]["prompt_accuracy"][8] == pytest.approx((1.0, 0.0, 1.0, 1.0))
    assert bench.verdict(s[0.0]["fid"][1], s[0.95]["fid"][1]) == "within spread"  # 4 ± 1.41 (3-5) vs 3.1 (3-3.2)
    assert bench.verdict((7.0, 4.24, 4.0, 10.0), (2.5, 0.71, 2.0, 3.0)) == "within spread (ranges apart)"
    assert bench.verdict(s[0.0]["fid"][8], s[0.95]["fid"][8]) == "differs (ranges apart)"  # 9 ± 1.41 vs 3.1 ± 0.14
    text = bench.table(s, bench.Plan(tmp_path, [0, 1], [0.0, 0.95], 300, 200, 2))
    assert "4.00 ± 1.41 (3.00-5.00)" in text and "1 step: within spread;" in text and "8 steps: differs" in text


def test_versus_compares_fixed_and_omega_conditioned_over_shared_seeds(bench, tmp_path):
    """--versus: lora_compare.sh's question (fixed omega vs an omega input) from the two seeded runs, called by the
    spread rule and saying which side is better."""
    import json

    fixed = bench.Plan(tmp_path / "f", [0, 1], [0.95], 300, 200, 1)
    omega = bench.Plan(tmp_path / "o", [0, 1, 2], [0.95], 300, 200, 1, omega_conditioned=True)
    for plan, base in ((fixed, 2.0), (omega, 3.0)):
        for seed in plan.seeds:
            plan.report(0.95, seed).parent.mkdir(parents=True)
            fids = [base + 0.1 * seed, base + 0.1 * seed, 2.0 + seed, 2.0 + seed]  # steps 4 and 8: overlapping
            plan.report(0.95, seed).write_text(json.dumps(_report(fids, [1.0] * 4)))
    text = bench.versus_table(fixed, omega)
    assert "2 training seeds (0, 1)" in text  # seed 2 of the omega run has no fixed partner
    assert "| EMA, mu 0.95 | fixed omega | 2.05 ± 0.07 (2.00-2.10) |" in text
    assert "- mu 0.95: 1 step differs (ranges apart) (fixed better); 2 steps differs (ranges apart) (fixed better); " \
           "4 steps within spread; 8 steps within spread." in text
