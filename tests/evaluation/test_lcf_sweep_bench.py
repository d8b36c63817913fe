"""benchmarks/lcf_sweep.py: its runs are valid train_lcf.py commands and its report reads the logged loss curves.

The sweep itself (~8 minutes) is measured in benchmarks/RESULTS.md; here its pieces run on synthetic inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lcm_distill.cli.train import parse_run
from lcm_distill.evaluation.report import EvalReport, ResultRow

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def sweep(load_benchmark):
    return load_benchmark("lcf_sweep")


def _plan(sweep, tmp_path):
    return sweep.Plan(out=tmp_path / "out", data=tmp_path / "inv", data_inverted=tmp_path / "inv")


def test_runs_are_valid_lcf_commands(sweep, tmp_path, capsys):
    plan = _plan(sweep, tmp_path)
    work = sweep.chains(plan, tmp_path / "lcm", [0.95, 0.999943], [1e-4, 8e-6], 30, [1, 4], 12)
    assert [c[0].name for c in work] == ["eval-start", "lcf-mu0.95-lr0.0001", "lcf-mu0.95-lr8e-06",
                                         "lcf-mu0.999943-lr0.0001", "lcf-mu0.999943-lr8e-06"]
    for chain in work[1:]:
        train, ev, ev_student = chain
        argv = train.argv
        print(parse_run(argv[1:], "lcf", argv[0])[1].to_yaml())  # raises unless a valid LCF config
        assert ev.argv[ev.argv.index("--model") + 1] == str(train.done.parent)
        assert ev_student.argv[ev_student.argv.index("--model") + 1] == str(train.done.parent.parent / "student")
        assert ev.argv[ev.argv.index("--reference") + 1] == str(plan.data_inverted)
    printed = capsys.readouterr().out
    assert "ema_decay: 0.999943" in printed and "learning_rate: 8.0e-06" in printed
    assert "report_to: tensorboard" in printed and "report_to: none" not in printed  # the curves need the logs
    assert f"dataset: {plan.data_inverted / 'train'}" in printed and "kind: lcf" in printed


def _report(path: Path, fids: dict[int, float]) -> None:
    rows = [ResultRow(steps=s, guidance_scale=9.0, omega=8.0, num_images=4, fid=f) for s, f in fids.items()]
    EvalReport(model="m", kind="lcm", pipeline="p", scheduler="s", timestep_spacing=None, seed=0,
               image_size=[16, 16], device="cpu", dtype="fp32", feature_extractor="testbed", reference=None,
               scorers=[], results=rows).write(path / "report.json")


def test_report_reads_tensorboard_curves(sweep, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    plan = _plan(sweep, tmp_path)
    _report(plan.out / "eval-start", {1: 30.0, 4: 28.0})
    for mu, base in ((0.95, 1.0), (0.999, 2.0)):
        run = plan.out / sweep.run_name(mu, 1e-4)
        writer = SummaryWriter(str(run / "logs" / "lcf"))
        for step in (1, 10, 20, 30, 40, 50, 60):
            writer.add_scalar("loss", base * (1.0 if step <= 30 else 0.5), step)
        writer.close()
        _report(run / "eval", {1: 20.0 + base, 4: 10.0 + base})
        _report(run / "eval-student", {1: 5.0 + base, 4: 3.0 + base})
    text = sweep.write_report(plan, [0.95, 0.999], [1e-4], 60, [1, 4], 4, "python benchmarks/lcf_sweep.py", 1.5)
    assert "| (starting LCM) | - | - | - | 30.00 | 28.00 | 30.00 | 28.00 |" in text
    assert "| 0.95 | 0.0001 | 1.00000 | 0.50000 | 21.00 | 11.00 | 6.00 | 4.00 |" in text
    assert "| 0.999 | 0.0001 | 2.00000 | 1.00000 | 22.00 | 12.00 | 7.00 | 5.00 |" in text
    assert (plan.out / "lcf_sweep.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="no tensorboard event file"):
        sweep.loss_curve(tmp_path / "nowhere")


def test_cli_names_the_bad_input(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--student", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert f"--student {tmp_path / 'missing'}" in err and "table1.py" in err
    (tmp_path / "lcm").mkdir()
    (tmp_path / "lcm" / "model_index.json").write_text("{}")
    with pytest.raises(SystemExit):
        sweep.main(["--student", str(tmp_path / "lcm"), "--data-inverted", str(tmp_path / "inv")])
    assert "--style inverted" in capsys.readouterr().err
    (tmp_path / "inv" / "train").mkdir(parents=True)
    (tmp_path / "inv" / "train" / "metadata.jsonl").write_text("")
    with pytest.raises(SystemExit):
        sweep.main(["--student", str(tmp_path / "lcm"), "--data-inverted", str(tmp_path / "inv"), "--mus", "1.0"])
    assert "--mus 1.0" in capsys.readouterr().err
