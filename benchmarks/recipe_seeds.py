"""The shipped tiny recipes over several training seeds: is quality step-robust (held-out FID at 4 <= 2 <= 1 steps
within the seed spread, 8 no worse than 4) at the recipe's own budget, and how far apart do seeds land?

    python benchmarks/recipe_seeds.py [--recipes lcd lcf] [--seeds 0 1 2] [--jobs 2] [--publish]

- lcd: configs/lcd_tiny_cpu.yaml as shipped (200 steps), seed = train.seed; its EMA target, evaluated like the demo
  (testbed FID and prompt accuracy, guidance 4, 200 images) at 1/2/4/8 steps.
- lcf: configs/lcf_tiny_cpu.yaml as shipped (200 steps, the curriculum), fine-tuning the lcd seed-0 target on the
  inverted style; held-out FID on the inverted test split (testbed features) at 1/2/4/8 steps.
The LoRA recipes' seeds are benchmarks/lora_target.py's. Finished steps are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout on sys.path (benchmarks/harness.py's one way)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ROOT, Step, evaluate_argv, publish, run_chains, seed_summary, train_argv

EVAL_STEPS = [1, 2, 4, 8]
RECIPES = {"lcd": ("train_lcd.py", "configs/lcd_tiny_cpu.yaml"), "lcf": ("train_lcf.py", "configs/lcf_tiny_cpu.yaml")}


@dataclass
class Plan:
    out: Path
    seeds: list[int]
    num_images: int
    jobs: int

    def run_dir(self, recipe: str, seed: int) -> Path:
        return self.out / f"{recipe}-seed{seed}"

    def report(self, recipe: str, seed: int) -> Path:
        return self.run_dir(recipe, seed) / "eval" / "report.json"


def data_dirs() -> dict[str, Path]:
    return {"lcd": ROOT / "outputs" / "testbed-digits", "lcf": ROOT / "outputs" / "testbed-digits-inverted"}


def chains(plan: Plan, recipe: str) -> list[list[Step]]:
    script, config = RECIPES[recipe]
    data = data_dirs()[recipe]
    work = []
    for seed in plan.seeds:
        run = plan.run_dir(recipe, seed)
        sets = [f"train.seed={seed}", "train.validation_prompts=[]"]
        if recipe == "lcf":
            sets += [f"model.student={plan.run_dir('lcd', plan.seeds[0]) / 'target'}", f"data.dataset={data / 'train'}"]
        argv = [*train_argv(script, config, run, sets), "--overwrite"]
        ev = evaluate_argv(run / "target", "lcm", EVAL_STEPS, run / "eval", guidance=4.0, reference=data,
                           num_images=plan.num_images, batch_size=50, threads=1,
                           prompt_accuracy="testbed" if recipe == "lcd" else "none")  # fmt: skip
        work.append([Step(f"{recipe}-seed{seed}", argv, run / "target" / "model_index.json"),
                     Step(f"eval-{recipe}-seed{seed}", ev, plan.report(recipe, seed))])  # fmt: skip
    return work


def step_robust(fid: dict[int, tuple[float, ...]]) -> str:
    """'yes' when FID at 2 <= 1, 4 <= 2 and 8 <= 4 within the spread (means, allowing the two std added)."""
    pairs = [(a, b) for a, b in ((1, 2), (2, 4), (4, 8)) if a in fid and b in fid]
    bad = [f"{b} > {a}" for a, b in pairs if fid[b][0] > fid[a][0] + fid[a][1] + fid[b][1]]
    return "yes" if not bad else "no (" + ", ".join(bad) + " steps)"


def table(summaries: dict[str, dict], plan: Plan, minutes: float | None = None) -> str:
    lines = [f"{len(plan.seeds)} training seeds ({', '.join(map(str, plan.seeds))}) per recipe at its shipped budget, "
             f"{plan.num_images} images per cell, guidance 4; mean ± sample std (min-max)."
             + (f" {minutes:.0f} min of compute this run." if minutes and minutes >= 1 else ""), "",
             "| recipe | " + " | ".join(f"FID {s} step{'s' * (s > 1)}" for s in EVAL_STEPS)
             + " | step-robust (spread rule) |",
             "|---" * (2 + len(EVAL_STEPS)) + "|"]  # fmt: skip
    for recipe, summary in summaries.items():
        cells = [f"{m:.2f} ± {s:.2f} ({lo:.2f}-{hi:.2f})" for m, s, lo, hi in summary["fid"].values()]
        lines.append(f"| {RECIPES[recipe][1]} | " + " | ".join(cells) + f" | {step_robust(summary['fid'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=["lcd", "lcf"], choices=sorted(RECIPES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-recipe-seeds")
    p.add_argument("--publish", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    plan = Plan(args.out, args.seeds, args.num_images, args.jobs)
    for recipe, data in data_dirs().items():
        style = ["--style", "inverted"] if recipe == "lcf" else []
        if not (data / "testbed.json").exists():
            subprocess.run([sys.executable, "-m", "lcm_distill.testbed.render", "--out", str(data), *style], cwd=ROOT,
                           check=True)  # fmt: skip
    t0 = time.perf_counter()
    if "lcf" in args.recipes:  # LCF starts from the lcd seed-0 target
        run_chains(chains(Plan(plan.out, plan.seeds[:1], plan.num_images, 1), "lcd")[:1], plan)
    for recipe in args.recipes:
        run_chains(chains(plan, recipe), plan)
    summaries = {r: seed_summary([json.loads(plan.report(r, s).read_text()) for s in plan.seeds], ("fid",))
                 for r in args.recipes}  # fmt: skip
    text = table(summaries, plan, (time.perf_counter() - t0) / 60)
    print(text)
    if args.publish:
        publish(text, ROOT / "benchmarks" / "RESULTS.md", "recipe_seeds", "Tiny recipes over training seeds: "
                "step-robust? (benchmarks/recipe_seeds.py)", [])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
