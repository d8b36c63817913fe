"""benchmarks/table1.py: its commands are valid for the real CLIs, its steps resume, and its report tells the truth.

The full benchmark takes ~25 minutes (its numbers are in benchmarks/RESULTS.md); here every piece it is made of
runs on synthetic inputs: the subprocess runner on a trivial command, the argv of every training and evaluation
step through the real parsers, and the markdown / plots / target verdicts on hand-made reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lcm_distill.cli.evaluate import build_parser
from lcm_distill.cli.train import parse_run
from lcm_distill.evaluation.report import EvalReport, ResultRow

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("table1")


@pytest.fixture(scope="module")
def runner(load_benchmark):
    """benchmarks/harness.py, what every benchmark script shares."""
    return load_benchmark("harness")


def _plan(bench, tmp_path, **kw):
    return bench.Plan(out=tmp_path / "out", data=tmp_path / "digits", data_inverted=tmp_path / "inv", **kw)


def _dry_run(argv: list[str]) -> int:
    kind = "lcf" if argv[0] == "train_lcf.py" else "lcd"
    print(parse_run([a for a in argv[1:] if a not in ("--resume", "latest")], kind, argv[0])[1].to_yaml())
    return 0


def test_every_step_parses_with_the_real_clis(bench, tmp_path, capsys):
    plan = _plan(bench, tmp_path, solvers=["ddim", "dpm_solver_pp_2s"], ks=[1, 50], ablation_budgets=[3, 6])
    work = bench.chains(plan)
    steps = [s for chain in work for s in chain]
    assert len(work) == 2 + 2 * 2  # main, teachers, one chain per (solver, k)
    for step in steps:
        if step.argv[0] == "-m":
            args = build_parser().parse_args(step.argv[2:])
            assert args.guidance == [9.0] and args.fid_features == "testbed" and args.threads == 1
        elif step.argv[0] == "benchmarks/table1.py":  # an ablation run: its flags rebuild the same plan
            p = bench.build_parser()
            sub = bench.plan_from_args(p, p.parse_args(step.argv[1:]))
            assert (sub.out, sub.data, sub.ablation_budgets, sub.ablation_eval_steps, sub.jobs) == (
                plan.out, plan.data, [3, 6], [1, 4], 2)
        else:
            assert _dry_run(step.argv) == 0, step.name
    for solver in plan.solvers:
        for k in plan.ks:
            for i, budget in enumerate(plan.ablation_budgets):
                argv = bench.ablation_train_argv(plan, solver, k, budget, resume=i > 0)
                assert ("--resume" in argv) == (i > 0) and _dry_run(argv) == 0
    printed = capsys.readouterr().out
    assert "num_points: 1000" in printed and "num_points: 20" in printed  # k=1 and k=50
    assert "solver: dpm_solver_pp_2s" in printed and "kind: lcf" in printed
    by_name = {s.name: s for s in steps}
    assert by_name["ablation-ddim-k50"].done == plan.out / "ablation" / "ddim-k50" / "eval-6" / "report.json"
    lcf = by_name["lcf"].argv
    assert f"model.student={plan.out / 'lcd' / 'target'}" in lcf
    assert f"data.dataset={plan.data_inverted / 'train'}" in lcf
    assert str(plan.data_inverted) in by_name["eval-lcf-after"].argv
    assert "50" in by_name["eval-teacher-ddim"].argv  # the teacher's 50-step reference


def test_run_chain_skips_finished_steps_and_names_the_failing_log(bench, runner, tmp_path):
    plan = _plan(bench, tmp_path)
    done = tmp_path / "a.done"
    write = ["-c", f"import pathlib; pathlib.Path({str(done)!r}).write_text('x')"]
    runner.run_chain([runner.Step("a", write, done)], plan)
    assert done.exists() and (plan.out / "logs" / "a.log").read_text().startswith("$ ")
    done.write_text("kept")
    runner.run_chain([runner.Step("a", write, done)], plan)  # finished before: not run again
    assert done.read_text() == "kept"
    with pytest.raises(RuntimeError, match=r"step b failed \(exit 3\).*b\.log"):
        runner.run_chain([runner.Step("b", ["-c", "import sys; sys.exit(3)"], tmp_path / "never")], plan)
    with pytest.raises(RuntimeError, match="step c failed"):  # exit 0 but no done file is a failure too
        runner.run_chain([runner.Step("c", ["-c", "pass"], tmp_path / "never")], plan)


def _report(path: Path, fids: dict[int, float]) -> None:
    rows = [ResultRow(steps=s, guidance_scale=9.0, omega=8.0, num_images=10, fid=f,
                      scores={"prompt_accuracy": 0.5}) for s, f in fids.items()]
    EvalReport(model="m", kind="lcm", pipeline="p", scheduler="s", timestep_spacing=None, seed=0,
               image_size=[16, 16], device="cpu", dtype="fp32", feature_extractor="testbed", reference=None,
               scorers=[], results=rows).write(path / "report.json")


def test_targets_pass_and_miss_on_the_numbers(bench, tmp_path):
    lcm = {"results": [{"steps": s, "fid": f} for s, f in ((2, 2.0), (4, 1.9))]}
    ddim = {"results": [{"steps": s, "fid": f} for s, f in ((2, 6.0), (4, 3.0), (50, 1.6))]}
    dpmpp = {"results": [{"steps": s, "fid": f} for s, f in ((2, 5.0), (4, 4.5))]}
    before, after = ({"results": [{"steps": 4, "fid": f}]} for f in (9.0, 4.0))
    lines = bench.target_checks(lcm, ddim, dpmpp, before, after, 4)
    assert [ln.split(":")[0] for ln in lines] == ["- PASS", "- MISS", "- PASS", "- PASS"]
    assert "1.90 vs teacher 50-step DDIM 1.60 (+19%" in lines[2]
    lines = bench.target_checks(lcm, ddim, dpmpp, after, before, 4)  # LCF made it worse
    assert lines[-1].startswith("- MISS") and "4.00 before -> 9.00 after" in lines[-1]


def test_report_and_publish(bench, runner, tmp_path):
    plan = _plan(bench, tmp_path, solvers=["ddim", "dpm_solver_2"], ks=[10, 20], ablation_budgets=[5, 10],
                 lcf_eval_steps=[1, 4])
    o = plan.out
    _report(o / "eval-lcm", {1: 3.0, 2: 2.0, 4: 1.5, 8: 1.4})
    _report(o / "eval-teacher-ddim", {1: 20.0, 2: 9.0, 4: 4.0, 8: 2.0, 50: 1.3})
    _report(o / "eval-teacher-dpmpp", {1: 19.0, 2: 8.0, 4: 3.5, 8: 1.9})
    _report(o / "eval-lcf-before", {1: 30.0, 4: 28.0})
    _report(o / "eval-lcf-after", {1: 12.0, 4: 10.0})
    for i, solver in enumerate(plan.solvers):
        for k in plan.ks:
            for b in plan.ablation_budgets:
                fid = 10.0 * (i + 1) + k / 10 + 1 / b
                _report(o / "ablation" / f"{solver}-k{k}" / f"eval-{b}", {1: fid + 100, 4: fid})
    text = bench.write_report(plan, {"lcd": 100.0, "lcf": 50.0}, "python benchmarks/table1.py --x")
    one_step, four_step = text.split("1-step sampling:")[1].split("4-step sampling:")
    assert "| DPM-Solver-2 | 121.20 / 121.10 | 122.20 / 122.10 |" in one_step
    assert "| DPM-Solver-2 | 21.20 / 21.10 | 22.20 / 22.10 |" in four_step
    assert "| LCM after LCF | 12.00 | 10.00 |" in text
    assert "- PASS: LCF" in text and "- PASS: LCM 4-step FID 1.50 vs teacher 50-step DDIM 1.30 (+15%" in text
    assert (o / "table1_main.png").stat().st_size > 0 and (o / "table1_fig3.png").stat().st_size > 0
    results = tmp_path / "bench" / "RESULTS.md"
    results.parent.mkdir()
    results.write_text("# Results\n\nolder text\n")
    plots = [o / "table1_main.png", o / "table1_fig3.png"]
    runner.publish(text, results, "table1", bench.TITLE, plots)
    results.write_text(results.read_text() + "\nour reading, kept\n")
    runner.publish(text.replace("python benchmarks/table1.py --x", "second run"), results, "table1", bench.TITLE, plots)
    published = results.read_text()
    assert published.count("<!-- table1:begin -->") == 1 and published.count(bench.TITLE) == 1
    assert "second run" in published and "--x" not in published and "our reading, kept" in published
    assert published.startswith("# Results\n\nolder text") and (results.parent / "table1_fig3.png").exists()


def test_cli_rejects_bad_arguments(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--ks", "3"])
    assert "--ks 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--ablation-budgets", "80", "40"])
    assert "strictly ascending" in capsys.readouterr().err


def test_ablation_run_trains_in_segments_in_one_process(bench, tmp_path):
    """Two training segments (the second resumed) and two evaluations in one process, on the real testbed."""
    from lcm_distill.testbed.render import main as render

    plan = _plan(bench, tmp_path, ks=[50], solvers=["dpm_solver_pp_2s"], ablation_budgets=[1, 2],
                 ablation_images=4, ablation_eval_steps=[1], jobs=1)
    assert render(["--out", str(plan.data)]) == 0
    bench.ablation_run(plan, "dpm_solver_pp_2s", 50)
    run = plan.out / "ablation" / "dpm_solver_pp_2s-k50"
    assert sorted(p.name for p in (run / "lcd" / "checkpoints").iterdir()) == [
        "checkpoint-00000001", "checkpoint-00000002"]
    first, second = (bench.load_report(run / f"eval-{b}" / "report.json") for b in (1, 2))
    assert first["results"][0]["num_images"] == 4 and second["results"][0]["fid"] != first["results"][0]["fid"]
    resolved = (run / "lcd" / "config.resolved.yaml").read_text()
    assert "solver: dpm_solver_pp_2s" in resolved and "num_points: 20" in resolved
    stamp = (run / "eval-2" / "report.json").stat().st_mtime_ns
    bench.ablation_run(plan, "dpm_solver_pp_2s", 50)  # everything done: nothing runs again
    assert (run / "eval-2" / "report.json").stat().st_mtime_ns == stamp
