#!/usr/bin/env python
"""LCF convergence on the digits testbed: loss curves and held-out FID at several target EMA rates and learning rates.

    python benchmarks/lcf_sweep.py --publish      # ~8 min on a 2-core CPU, after benchmarks/table1.py

Why: a user of the official LCM code reported LCF "stalling" (loss flat near 0.005 with mu = 0.999943, lr 8e-6,
batch 72). This sweep fine-tunes the Table-1 LCM (outputs/bench-table1/lcd/target) on the testbed's unseen
"inverted" style with ``train_lcf.py`` at each (mu, lr) pair, logs the loss every 10 steps (tensorboard), and scores
the result with ``python -m lcm_distill.cli.evaluate`` on the inverted test split. Steps already finished are skipped.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill
from benchmarks.harness import ROOT, Step, publish, run_chains, train_argv
from benchmarks.table1 import Plan, evaluate_step, fid_at
from lcm_distill.evaluation.report import load_report

TITLE = "LCF convergence: target EMA rate mu x learning rate (benchmarks/lcf_sweep.py)"


def run_name(mu: float, lr: float) -> str:
    return f"mu{mu:g}-lr{lr:g}"


def chains(plan: Plan, student: Path, mus: list[float], lrs: list[float], steps: int, eval_steps: list[int],
           images: int) -> list[list[Step]]:
    """One chain per (mu, lr): train_lcf.py, then its evaluation; plus the evaluation of the starting LCM."""
    ref = plan.data_inverted
    work = [[evaluate_step(plan, "eval-start", student, "lcm", eval_steps, plan.out / "eval-start", ref, images)]]
    for mu in mus:
        for lr in lrs:
            name, run = run_name(mu, lr), plan.out / run_name(mu, lr)
            sets = [f"model.student={student}", f"data.dataset={ref / 'train'}", f"train.max_train_steps={steps}",
                    f"train.checkpoint_every={steps}", f"train.ema_decay={mu}", f"optim.learning_rate={lr}",
                    "train.log_every=10", "train.validation_prompts=[]"]
            work.append([
                Step(f"lcf-{name}", train_argv("train_lcf.py", "configs/lcf_tiny_cpu.yaml", run, sets,
                                               report_to="tensorboard"),  # the loss curves are read from the logs
                     run / "target" / "model_index.json"),
                # the target (EMA, what the paper samples from) and the online student, which mu does not slow down
                evaluate_step(plan, f"eval-{name}", run / "target", "lcm", eval_steps, run / "eval", ref, images),
                evaluate_step(plan, f"eval-student-{name}", run / "student", "lcm", eval_steps, run / "eval-student",
                              ref, images),
            ])
    return work


def loss_curve(run: Path) -> list[tuple[int, float]]:
    """(step, loss) as logged by the engine to tensorboard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((run / "logs").rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"{run / 'logs'}: no tensorboard event file (was train.report_to tensorboard?)")
    points: dict[int, float] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if "loss" in acc.Tags()["scalars"]:
            points.update({e.step: e.value for e in acc.Scalars("loss")})
    return sorted(points.items())


def window_mean(curve: list[tuple[int, float]], lo: int, hi: int) -> float:
    vals = [v for s, v in curve if lo <= s <= hi]
    return sum(vals) / len(vals) if vals else float("nan")


def write_report(plan: Plan, mus: list[float], lrs: list[float], steps: int, eval_steps: list[int], images: int,
                 command: str, minutes: float) -> str:
    """Markdown table (loss early/late, FID per step count) and a loss-curve plot lcf_sweep.png in plan.out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = load_report(plan.out / "eval-start" / "report.json")
    head = " | ".join(f"{net} FID {s}-step" for net in ("target", "student") for s in eval_steps)
    md = [f"Command: `{command}` ({minutes:.1f} min)", "",
          f"LCF of the Table-1 LCM on the inverted style, {steps} steps, batch 16, Huber loss, omega ~ U[2, 8]; "
          f"FID against the inverted test split, {images} images, g = {plan.guidance:g}, of the exported "
          f"target (the EMA network the paper samples from) and of the online student. Loss: mean of the values "
          f"logged every 10 steps over the first 30 and the last 30 steps.", "",
          f"| mu (train.ema_decay) | lr | loss, steps 1-30 | loss, last 30 | {head} |",
          "|---|---|---|---|" + "---|" * 2 * len(eval_steps),
          "| (starting LCM) | - | - | - | " + " | ".join(f"{fid_at(start, s):.2f}" for s in eval_steps * 2) + " |"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for mu in mus:
        for lr in lrs:
            run = plan.out / run_name(mu, lr)
            curve = loss_curve(run)
            reps = [load_report(run / d / "report.json") for d in ("eval", "eval-student")]
            md.append(f"| {mu:g} | {lr:g} | {window_mean(curve, 1, 30):.5f} | "
                      f"{window_mean(curve, steps - 29, steps):.5f} | "
                      + " | ".join(f"{fid_at(r, s):.2f}" for r in reps for s in eval_steps) + " |")
            ax.plot([s for s, _ in curve], [v for _, v in curve], label=f"mu={mu:g}, lr={lr:g}")
    ax.set_xlabel("LCF step")
    ax.set_ylabel("training loss (Huber)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plan.out / "lcf_sweep.png", dpi=110)
    plt.close(fig)
    md += ["", "![LCF loss curves](lcf_sweep.png)", ""]
    text = "\n".join(md)
    (plan.out / "lcf_sweep.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/bench-lcf-sweep"))
    p.add_argument("--student", type=Path, default=Path("outputs/bench-table1/lcd/target"),
                   help="LCM folder to fine-tune (default: the one benchmarks/table1.py distils)")
    p.add_argument("--data-inverted", type=Path, default=Path("outputs/testbed-digits-inverted"))
    p.add_argument("--mus", nargs="+", type=float, default=[0.95, 0.999, 0.999943])
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 8e-6])
    p.add_argument("--steps", type=int, default=300, help="LCF steps per run")
    p.add_argument("--eval-steps", nargs="+", type=int, default=[1, 4])
    p.add_argument("--num-images", type=int, default=300)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--publish", action="store_true", help="write the results into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if not (args.student / "model_index.json").exists():
        p.error(f"--student {args.student}: no LCM pipeline folder there; run benchmarks/table1.py first")
    if not (args.data_inverted / "train" / "metadata.jsonl").exists():
        p.error(f"--data-inverted {args.data_inverted}: not rendered; run python -m lcm_distill.testbed.render "
                f"--out {args.data_inverted} --style inverted")
    bad = [m for m in args.mus if not 0.0 <= m < 1.0]
    if bad:
        p.error(f"--mus {bad[0]}: an EMA rate must be in [0, 1)")
    plan = Plan(out=args.out.resolve(), data=args.data_inverted.resolve(), data_inverted=args.data_inverted.resolve(),
                jobs=args.jobs)
    t0 = time.perf_counter()
    work = chains(plan, args.student.resolve(), args.mus, args.lrs, args.steps, args.eval_steps, args.num_images)
    run_chains(work[::-1], plan)  # the long chains first
    command = shlex.join(["python", "benchmarks/lcf_sweep.py", *(argv if argv is not None else sys.argv[1:])])
    text = write_report(plan, args.mus, args.lrs, args.steps, args.eval_steps, args.num_images, command,
                        (time.perf_counter() - t0) / 60)
    print(text)
    if args.publish:
        publish(text, ROOT / "benchmarks" / "RESULTS.md", "lcf_sweep", TITLE, [plan.out / "lcf_sweep.png"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
