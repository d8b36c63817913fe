"""Why no-target LCM-LoRA collapses, and which one change prevents it.

The setting is benchmarks/lora_target.py's no-target cell (configs/lcd_tiny_cpu.yaml, LoRA rank 16 / alpha 16, lr
1e-3, fixed omega 3, train.ema_decay 0 - diffusers' LCM-LoRA recipe) at the training seed that collapsed there (2).
Each variant trains with the in-training quality signal (quality_fid: 64 fixed prompts, 1 step, testbed features)
every ``--every`` steps and logs loss, lr and grad_norm (before clipping) every step to tensorboard. A check counts
as a collapse when quality_fid exceeds the best so far by the engine's own warning factor (engine/quality.py).

Then the collapsing run is repeated with a check after every step up to the first bad check (runs are
deterministic per seed, so it retraces the same path): the exact step where the images break, with the loss and
gradient norm of the steps before it - the bisection, without saving a checkpoint per step.

    python benchmarks/lora_collapse.py [--seeds 2] [--steps 300] [--every 5] [--jobs 2] [--publish]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout on sys.path (benchmarks/harness.py's one way)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ROOT, Step, publish, run_chains, train_argv
from benchmarks.lora_target import LORA
from lcm_distill.engine.quality import DEGRADED_FACTOR

# One change each from the collapsing setting (the first row); the EMA row is the shipped LoRA recipes' fix.
VARIANTS: dict[str, list[str]] = {
    "no target (mu 0), lr 1e-3": [],
    "EMA of adapters, mu 0.95": ["train.ema_decay=0.95"],
    "lr 1e-4": ["optim.learning_rate=1e-4"],
    "max_grad_norm 0.1": ["optim.max_grad_norm=0.1"],
    "warm-up 100 steps": ["optim.lr_warmup_steps=100"],
}
BASE = [*LORA, "train.ema_decay=0", "train.log_every=1", "train.quality_images=64", "train.quality_steps=1"]


@dataclass
class Plan:
    out: Path
    seeds: list[int]
    steps: int
    every: int
    jobs: int

    def run_dir(self, variant: str, seed: int, fine: bool = False) -> Path:
        slug = variant.split(",")[0].replace(" ", "-").replace("(", "").replace(")", "").lower()
        return self.out / f"{slug}-seed{seed}{'-fine' if fine else ''}"


def train_step(plan: Plan, variant: str, seed: int, reference: Path, fine_until: int | None = None) -> Step:
    """The variant's run (quality check every plan.every steps), or the retrace (every step up to fine_until)."""
    run = plan.run_dir(variant, seed, fine=fine_until is not None)
    steps, every = (fine_until, 1) if fine_until is not None else (plan.steps, plan.every)
    sets = [*BASE, *VARIANTS[variant], f"train.seed={seed}", f"train.max_train_steps={steps}",
            f"train.quality_every={every}", f"train.quality_reference={reference}"]  # fmt: skip
    argv = [*train_argv("train_lcd.py", "configs/lcd_tiny_cpu.yaml", run, sets, report_to="tensorboard"), "--overwrite"]
    return Step(f"train-{run.name}", argv, run / "student" / "model_index.json")


def scalars(run: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from the run's tensorboard events (the last value wins on a repeated step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for f in sorted((run / "logs").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def first_collapse(quality: dict[int, float]) -> int | None:
    """The first check whose quality_fid exceeds DEGRADED_FACTOR x the best before it (engine/quality.py's rule)."""
    best = float("inf")
    for step, value in sorted(quality.items()):
        if value > DEGRADED_FACTOR * best:
            return step
        best = min(best, value)
    return None


def summary_row(variant: str, seed: int, s: dict[str, dict[int, float]]) -> str:
    q, g = s["quality_fid"], s.get("grad_norm", {})
    best_step = min(q, key=q.get)
    bad = first_collapse(q)
    last = max(q)
    before = [v for k, v in g.items() if bad is None or k < bad]
    grad = f"{statistics.median(before):.3g} / {max(before):.3g}" if before else "n/a"
    return (f"| {variant} | {seed} | {q[best_step]:.2f} (step {best_step}) | "
            f"{'step ' + str(bad) + f' ({q[bad]:.1f})' if bad else 'none'} | {max(q.values()):.2f} | {q[last]:.2f} | "
            f"{grad} |")  # fmt: skip


def window_table(s: dict[str, dict[int, float]], bad: int, span: int) -> list[str]:
    """Step by step before the first bad check of the fine run: quality_fid, loss, grad_norm, lr."""
    rows = ["| step | quality_fid (1 step) | loss | grad_norm (before clipping) | lr |", "|---|---|---|---|---|"]
    for k in range(max(1, bad - span), bad + 1):
        cell = [s.get(tag, {}).get(k) for tag in ("quality_fid", "loss", "grad_norm", "lr")]
        rows.append(f"| {k} | " + " | ".join("" if v is None else f"{v:.4g}" for v in cell) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=5, help="train.quality_every of the variant runs")
    p.add_argument("--span", type=int, default=12, help="steps shown before the fine run's first bad check")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-lora-collapse")
    p.add_argument("--publish", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    plan = Plan(args.out, args.seeds, args.steps, args.every, args.jobs)
    reference = ROOT / "outputs" / "testbed-digits"
    if not (reference / "testbed.json").exists():
        subprocess.run([sys.executable, "-m", "lcm_distill.testbed.render", "--out", str(reference)], cwd=ROOT,
                       check=True)  # fmt: skip
    t0 = time.perf_counter()
    run_chains([[train_step(plan, v, s, reference)] for s in plan.seeds for v in VARIANTS], plan)
    lines = [f"LoRA rank 16, lr 1e-3, fixed omega 3, {plan.steps} steps; quality_fid every {plan.every} steps (64 "
             f"images, 1 step); collapse = a check above {DEGRADED_FACTOR:g}x the best before it; grad_norm median / "
             "max over the steps before the collapse (all steps when none).", "",
             "| variant | seed | best quality_fid | first collapse | worst | last | grad_norm median / max |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    base = next(iter(VARIANTS))
    fine = []
    for seed in plan.seeds:
        for variant in VARIANTS:
            s = scalars(plan.run_dir(variant, seed))
            lines.append(summary_row(variant, seed, s))
            if variant == base and (bad := first_collapse(s["quality_fid"])) is not None:
                fine.append((seed, bad))
    for seed, bad in fine:  # retrace the collapsing run with a check after every step, up to its first bad check
        run_chains([[train_step(plan, base, seed, reference, fine_until=bad)]], plan)
        s = scalars(plan.run_dir(base, seed, fine=True))
        exact = first_collapse(s["quality_fid"])
        lines += ["", f"Seed {seed}, retraced with a check after every step up to step {bad}: first collapsed check "
                  f"at step {exact}." if exact else f"Seed {seed}: the retrace to step {bad} did not collapse "
                  "(the trajectory is not reproducible?)", "", *window_table(s, exact or bad, args.span)]  # fmt: skip
    minutes = (time.perf_counter() - t0) / 60
    if minutes >= 1:  # a rerun that only reads finished runs says nothing about their cost
        lines.insert(1, f"({minutes:.0f} min of compute this run, {plan.jobs} chains at a time.)")
    text = "\n".join(lines)
    print(text)
    if args.publish:
        publish(text, ROOT / "benchmarks" / "RESULTS.md", "lora_collapse",
                "Why no-target LCM-LoRA collapses (benchmarks/lora_collapse.py)", [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
