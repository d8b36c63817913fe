#!/usr/bin/env python
"""The LCM paper's Table 1, Fig. 3 and LCF experiment in miniature, on the digits testbed, on a CPU.

    python benchmarks/table1.py --out outputs/bench-table1 --publish     # 26 min on a 2-core CPU (measured)

What runs (every piece is one of the toolkit's own commands, started as a subprocess and logged):

* Table 1: ``train_lcd.py`` distils the bundled v-prediction teacher (configs/lcd_tiny_cpu.yaml: DDIM solver,
  k = 20, omega ~ U[2, 8]); then ``python -m lcm_distill.cli.evaluate`` scores the LCM, the teacher with DDIM and the
  teacher with DPM-Solver++ at 1/2/4/8 steps (plus the teacher's 50-step DDIM) at the paper's omega = 8
  (guidance_scale 9): domain FID against the real test split and prompt accuracy.
* Fig. 3 (reduced budget): the same distillation with solver in {DDIM, DPM-Solver-2, DPM-Solver++(2S)} x skipping
  step k in {1, 5, 10, 20, 50} (objective.num_points = T // k), 1- and 4-step FID after each training budget (the
  run is resumed from its last checkpoint between budgets, so one run gives the FID-vs-iterations curve).
* LCF: ``train_lcf.py`` (configs/lcf_tiny_cpu.yaml) fine-tunes the Table-1 LCM on the "inverted" style that the
  teacher never saw; held-out FID on the inverted test split before and after.

Independent chains run ``--jobs`` at a time with one torch thread each. Finished steps are skipped when the
script is run again (delete the output folder to start over). ``--publish`` copies the markdown and plots into
benchmarks/ (RESULTS.md between the table1 markers, table1_*.png).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill

from benchmarks.harness import ROOT, Step, evaluate_argv, publish, run_chains, train_argv
from lcm_distill.evaluation.report import load_report, markdown_table, plot_quality_vs_steps
from lcm_distill.functional import SOLVERS as SOLVER_REGISTRY
from lcm_distill.functional import SkippingGrid, omega_from_guidance_scale

SOLVERS = tuple(SOLVER_REGISTRY)  # every registered solver is an ablation choice
SOLVER_LABELS = {name: solver.label for name, solver in SOLVER_REGISTRY.items()}
TITLE = "Table 1, Fig. 3 and LCF in miniature (benchmarks/table1.py)"
TEACHER = Path("assets/testbed/teacher-v")  # the teacher configs/lcd_tiny_cpu.yaml distils (relative to ROOT)


def num_points_for(k: int) -> int:
    """objective.num_points N giving skipping step ``k`` (the grid's k = T // N) on T = 1000 training timesteps;
    ValueError when k does not divide T."""
    T = SkippingGrid.num_train_timesteps
    if k < 1 or T % k:
        raise ValueError(f"a skipping step must divide the {T} training timesteps")
    grid = SkippingGrid(T, T // k)
    assert grid.k == k
    return grid.num_points


@dataclass
class Plan:
    out: Path
    data: Path
    data_inverted: Path
    lcd_steps: int = 300
    num_images: int = 1000
    steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    guidance: float = 9.0
    solvers: list[str] = field(default_factory=lambda: list(SOLVERS))
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50])
    ablation_budgets: list[int] = field(default_factory=lambda: [50, 100, 150])
    ablation_images: int = 300
    ablation_eval_steps: list[int] = field(default_factory=lambda: [1, 4])
    lcf_steps: int = 200
    lcf_images: int = 500
    lcf_eval_steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    jobs: int = 2


def evaluate_step(plan: Plan, name: str, model: Path, kind: str, steps: list[int], out: Path, reference: Path,
                  num_images: int) -> Step:
    argv = evaluate_argv(model, kind, steps, out, guidance=plan.guidance, reference=reference, num_images=num_images,
                         threads=1 if plan.jobs > 1 else 0)  # fmt: skip
    return Step(name, argv, out / "report.json")


def chains(plan: Plan) -> list[list[Step]]:
    """The work as independent chains (steps in a chain run in order); the longest chains first."""
    o, py_ref = plan.out, plan.data
    lcd, lcf = o / "lcd", o / "lcf"
    main = [
        Step("lcd", train_argv("train_lcd.py", "configs/lcd_tiny_cpu.yaml", lcd,
                           [f"train.max_train_steps={plan.lcd_steps}", f"train.checkpoint_every={plan.lcd_steps}",
                            f"data.dataset={plan.data / 'train'}",
                            f"train.validation_guidance_scale={plan.guidance:g}"]),
             lcd / "target" / "model_index.json"),
        evaluate_step(plan, "eval-lcm", lcd / "target", "lcm", plan.steps, o / "eval-lcm", py_ref, plan.num_images),
        evaluate_step(plan, "eval-lcf-before", lcd / "target", "lcm", plan.lcf_eval_steps, o / "eval-lcf-before",
                      plan.data_inverted, plan.lcf_images),
        Step("lcf", train_argv("train_lcf.py", "configs/lcf_tiny_cpu.yaml", lcf,
                           [f"model.student={lcd / 'target'}", f"data.dataset={plan.data_inverted / 'train'}",
                            f"train.max_train_steps={plan.lcf_steps}", f"train.checkpoint_every={plan.lcf_steps}"]),
             lcf / "target" / "model_index.json"),
        evaluate_step(plan, "eval-lcf-after", lcf / "target", "lcm", plan.lcf_eval_steps, o / "eval-lcf-after",
                      plan.data_inverted, plan.lcf_images),
    ]
    teachers = [
        evaluate_step(plan, "eval-teacher-ddim", TEACHER, "teacher-ddim", [*plan.steps, 50],
                      o / "eval-teacher-ddim", py_ref, plan.num_images),
        evaluate_step(plan, "eval-teacher-dpmpp", TEACHER, "teacher-dpmpp", plan.steps,
                      o / "eval-teacher-dpmpp", py_ref, plan.num_images),
    ]
    ablation = []
    for solver in plan.solvers:
        for k in plan.ks:
            # One process per run: its training segments and evaluations run in-process (ablation_run), which
            # saves ~25 s of start-up per segment on a CPU.
            argv = ["benchmarks/table1.py", "--ablation-run", solver, str(k), "--out", str(o), "--data",
                    str(plan.data), "--ablation-budgets", *map(str, plan.ablation_budgets), "--ablation-images",
                    str(plan.ablation_images), "--ablation-eval-steps", *map(str, plan.ablation_eval_steps),
                    "--jobs", str(plan.jobs)]
            last = plan.ablation_budgets[-1]
            ablation.append([Step(f"ablation-{solver}-k{k}", argv, ablation_step_paths(plan, solver, k, last)[1])])
    return [main, teachers, *ablation]


def ablation_step_paths(plan: Plan, solver: str, k: int, budget: int) -> tuple[Path, Path]:
    """(run folder, report.json of the evaluation after ``budget`` training iterations)."""
    run = plan.out / "ablation" / f"{solver}-k{k}"
    return run, run / f"eval-{budget}" / "report.json"


def ablation_train_argv(plan: Plan, solver: str, k: int, budget: int, resume: bool) -> list[str]:
    run, _ = ablation_step_paths(plan, solver, k, budget)
    sets = [f"objective.solver={solver}", f"objective.num_points={num_points_for(k)}",
            f"train.max_train_steps={budget}", f"train.checkpoint_every={budget}",
            f"train.checkpoints_keep={len(plan.ablation_budgets) + 1}",
            f"data.dataset={plan.data / 'train'}", "train.validation_prompts=[]"]
    return train_argv("train_lcd.py", "configs/lcd_tiny_cpu.yaml", run / "lcd", sets, resume=resume)


def ablation_run(plan: Plan, solver: str, k: int) -> None:
    """Train one (solver, k) run up to each budget in turn (resuming from its last checkpoint) and evaluate the
    target after each, all in this process through the same CLIs the other steps use."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from lcm_distill.cli import main as train_cli
    from lcm_distill.cli.evaluate import main as evaluate_cli
    from lcm_distill.engine.checkpoint import checkpoint_path

    for i, budget in enumerate(plan.ablation_budgets):
        run, report = ablation_step_paths(plan, solver, k, budget)
        if report.exists():
            continue
        t0 = time.perf_counter()
        if not checkpoint_path(run / "lcd", budget).exists():
            argv = ablation_train_argv(plan, solver, k, budget, resume=i > 0)
            if train_cli(argv[1:], kind="lcd", prog="train_lcd.py") != 0:
                raise RuntimeError(f"[table1] training {solver} k={k} to {budget} steps failed")
            AcceleratorState._reset_state(reset_partial_state=True)
            PartialState._reset_state()
            GradientState._reset_state()
        ev = evaluate_step(plan, "", run / "lcd" / "target", "lcm", plan.ablation_eval_steps, report.parent,
                           plan.data, plan.ablation_images)
        evaluate_cli(ev.argv[2:])
        print(f"[table1] {solver} k={k} budget {budget}: {time.perf_counter() - t0:.0f} s", flush=True)


def run_all(plan: Plan) -> dict[str, float]:
    """Render the data (both styles), then run every chain, ``plan.jobs`` at a time. Returns seconds per step."""
    for path, style in ((plan.data, "plain"), (plan.data_inverted, "inverted")):
        if not (path / "test" / "metadata.jsonl").exists():
            subprocess.run([sys.executable, "-m", "lcm_distill.testbed.render", "--out", str(path), "--style", style],
                           cwd=ROOT, check=True)
    work = chains(plan)
    run_chains(work, plan)
    timings_path = plan.out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings.update({s.name: round(s.seconds, 1) for c in work for s in c if s.seconds is not None})
    timings_path.write_text(json.dumps(timings, indent=1))
    return timings


def fid_at(report: dict, steps: int) -> float:
    """FID of a report's row at ``steps`` sampling steps (StopIteration if that row was not evaluated)."""
    return next(r["fid"] for r in report["results"] if r["steps"] == steps)


def ablation_fids(plan: Plan, steps: int) -> dict[str, dict[int, dict[int, float]]]:
    """solver -> k -> training budget -> FID of ``steps``-step sampling."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    for solver in plan.solvers:
        for k in plan.ks:
            for b in plan.ablation_budgets:
                report = load_report(ablation_step_paths(plan, solver, k, b)[1])
                out.setdefault(solver, {}).setdefault(k, {})[b] = fid_at(report, steps)
    return out


def target_checks(lcm: dict, ddim: dict, dpmpp: dict, before: dict, after: dict, lcf_steps: int) -> list[str]:
    """The issue's three targets, each stated with its numbers and PASS / MISS (never a bare verdict)."""
    lines = []
    for s in (2, 4):
        f_l, f_d, f_p = fid_at(lcm, s), fid_at(ddim, s), fid_at(dpmpp, s)
        ok = f_l <= 0.5 * min(f_d, f_p)
        lines.append(f"- {'PASS' if ok else 'MISS'}: LCM {s}-step FID {f_l:.2f} vs teacher DDIM {f_d:.2f} / "
                     f"DPM-Solver++ {f_p:.2f} (target: at most half of the better one)")
    f4, f50 = fid_at(lcm, 4), fid_at(ddim, 50)
    lines.append(f"- {'PASS' if f4 <= 1.25 * f50 else 'MISS'}: LCM 4-step FID {f4:.2f} vs teacher 50-step DDIM "
                 f"{f50:.2f} ({(f4 / f50 - 1) * 100:+.0f}%; target: within +25%)")
    fb, fa = fid_at(before, lcf_steps), fid_at(after, lcf_steps)
    lines.append(f"- {'PASS' if fa < fb else 'MISS'}: LCF, held-out inverted-style FID at {lcf_steps} steps "
                 f"{fb:.2f} before -> {fa:.2f} after (target: lower)")
    return lines


def plot_ablation(fids_by_steps: dict[int, dict[str, dict[int, dict[int, float]]]], path: Path) -> Path:
    """Fig. 3's layout: one panel per solver (a row per sampling step count), FID against training iterations,
    one line per skipping step k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_solvers = len(next(iter(fids_by_steps.values())))
    fig, axes = plt.subplots(len(fids_by_steps), n_solvers, figsize=(4.2 * n_solvers, 3.2 * len(fids_by_steps)),
                             squeeze=False, sharey="row")
    for row, (steps, fids) in zip(axes, fids_by_steps.items(), strict=True):
        for ax, (solver, by_k) in zip(row, fids.items(), strict=True):
            for k, by_budget in by_k.items():
                budgets = sorted(by_budget)
                ax.plot(budgets, [by_budget[b] for b in budgets], marker="o", label=f"k={k}")
            ax.set_title(f"{SOLVER_LABELS.get(solver, solver)}, {steps}-step sampling", fontsize=9)
            ax.set_xlabel("training iterations")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("FID")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(plan: Plan, timings: dict[str, float], command: str) -> str:
    """Markdown for RESULTS.md (tables, target checks, timings) plus table1_main.png / table1_fig3.png in out."""
    o = plan.out
    lcm, ddim, dpmpp = (load_report(o / d / "report.json") for d in ("eval-lcm", "eval-teacher-ddim",
                                                                       "eval-teacher-dpmpp"))
    before, after = (load_report(o / d / "report.json") for d in ("eval-lcf-before", "eval-lcf-after"))
    plot_quality_vs_steps([ddim, dpmpp, lcm], o / "table1_main.png", title=f"testbed, g = {plan.guidance:g}")
    fids_by_steps = {s: ablation_fids(plan, s) for s in plan.ablation_eval_steps}
    plot_ablation(fids_by_steps, o / "table1_fig3.png")
    lcf_s = max(plan.lcf_eval_steps)
    budgets = plan.ablation_budgets
    md = [f"Command: `{command}`", "",
          f"Table 1 in miniature: {TEACHER.name} ({TEACHER.parent}) with DDIM and DPM-Solver++, and the LCM "
          f"distilled from it ({plan.lcd_steps} LCD steps, DDIM solver, k = 20), guidance_scale {plan.guidance:g} "
          f"(omega = {omega_from_guidance_scale(plan.guidance):g}), {plan.num_images} images per cell, seed 0, "
          f"against the real test split (data floor FID 0.41).", "",
          "**Domain FID (lower is better)**", "", markdown_table([ddim, dpmpp, lcm], "fid"),
          "**Prompt accuracy (higher is better)**", "", markdown_table([ddim, dpmpp, lcm], "prompt_accuracy"),
          "![Table 1 plot](table1_main.png)", "", "Targets:", "",
          *target_checks(lcm, ddim, dpmpp, before, after, lcf_s), "",
          f"**Fig. 3 ablation** (reduced budget): FID at g = {plan.guidance:g} ({plan.ablation_images} images) "
          f"after {' / '.join(map(str, budgets))} training iterations (batch 16), by ODE solver and skipping "
          f"step k (num_points = T // k, T = 1000); otherwise the Table-1 LCM's configuration.", ""]
    for steps, fids in fids_by_steps.items():
        md += [f"{steps}-step sampling:", "",
               "| solver | " + " | ".join(f"k={k}" for k in plan.ks) + " |", "|---|" + "---|" * len(plan.ks)]
        for solver, by_k in fids.items():
            cells = [" / ".join(f"{by_k[k][b]:.2f}" for b in budgets) for k in plan.ks]
            md.append(f"| {SOLVER_LABELS.get(solver, solver)} | " + " | ".join(cells) + " |")
        md.append("")
    md += ["![Fig. 3 ablation](table1_fig3.png)", "",
           f"**LCF** on the unseen inverted style ({plan.lcf_steps} steps of train_lcf.py, configs/lcf_tiny_cpu.yaml):"
           f" FID against the inverted test split, {plan.lcf_images} images per cell, g = {plan.guidance:g}.", "",
           "| model | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in plan.lcf_eval_steps) + " |",
           "|---|" + "---|" * len(plan.lcf_eval_steps)]
    for label, rep in (("LCM before LCF", before), ("LCM after LCF", after)):
        md.append(f"| {label} | " + " | ".join(f"{fid_at(rep, s):.2f}" for s in plan.lcf_eval_steps) + " |")
    total = sum(timings.values())
    md += ["", f"Wall time of the steps (summed over {plan.jobs} parallel jobs): {total / 60:.1f} min; "
           f"main LCD {timings.get('lcd', float('nan')):.0f} s, LCF {timings.get('lcf', float('nan')):.0f} s.", ""]
    text = "\n".join(md)
    (o / "table1.md").write_text(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/bench-table1"))
    p.add_argument("--data", type=Path, default=Path("outputs/testbed-digits"))
    p.add_argument("--data-inverted", type=Path, default=Path("outputs/testbed-digits-inverted"))
    p.add_argument("--lcd-steps", type=int, default=Plan.lcd_steps)
    p.add_argument("--num-images", type=int, default=Plan.num_images)
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    p.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10, 20, 50])
    p.add_argument("--ablation-budgets", nargs="+", type=int, default=[50, 100, 150],
                   help="training iterations at which each ablation run is evaluated (ascending)")
    p.add_argument("--ablation-images", type=int, default=Plan.ablation_images)
    p.add_argument("--ablation-eval-steps", nargs="+", type=int, default=[1, 4],
                   help="sampling step counts of the ablation's FID (the paper's Fig. 3: 4)")
    p.add_argument("--ablation-run", nargs=2, metavar=("SOLVER", "K"),
                   help="internal: train and evaluate one ablation run in this process")
    p.add_argument("--lcf-steps", type=int, default=Plan.lcf_steps)
    p.add_argument("--lcf-images", type=int, default=Plan.lcf_images)
    p.add_argument("--jobs", type=int, default=2, help="chains run in parallel (one torch thread each if > 1)")
    p.add_argument("--publish", action="store_true", help="write the results into benchmarks/RESULTS.md")
    return p


def plan_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> Plan:
    """Check the flags (errors name the flag) and build the plan."""
    for k in args.ks:
        try:
            num_points_for(k)
        except ValueError as err:
            p.error(f"--ks {k}: {err}")
    if args.ablation_budgets != sorted(set(args.ablation_budgets)):
        p.error(f"--ablation-budgets {args.ablation_budgets}: must be strictly ascending")
    if not (ROOT / TEACHER / "model_index.json").exists():
        p.error(f"{TEACHER} is missing: run `python -m lcm_distill.testbed.build` first")
    plan = Plan(out=args.out.resolve(), data=args.data.resolve(), data_inverted=args.data_inverted.resolve(),
                lcd_steps=args.lcd_steps, num_images=args.num_images, solvers=args.solvers, ks=args.ks,
                ablation_budgets=args.ablation_budgets, ablation_images=args.ablation_images,
                ablation_eval_steps=args.ablation_eval_steps, lcf_steps=args.lcf_steps, lcf_images=args.lcf_images,
                jobs=args.jobs)
    return plan


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    plan = plan_from_args(p, args)
    if args.ablation_run:
        solver, k = args.ablation_run
        if solver not in SOLVERS:
            p.error(f"--ablation-run {solver}: the solver must be one of {SOLVERS}")
        ablation_run(plan, solver, int(k))
        return 0
    t0 = time.perf_counter()
    timings = run_all(plan)
    command = shlex.join(["python", "benchmarks/table1.py", *(argv if argv is not None else sys.argv[1:])])
    text = write_report(plan, timings, command)
    print(text)
    print(f"[table1] finished in {(time.perf_counter() - t0) / 60:.1f} min; report {plan.out / 'table1.md'}")
    if args.publish:
        publish(text, ROOT / "benchmarks" / "RESULTS.md", "table1", TITLE,
                [plan.out / "table1_main.png", plan.out / "table1_fig3.png"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
