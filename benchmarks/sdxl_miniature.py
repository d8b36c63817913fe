#!/usr/bin/env python
"""Table 1 in miniature for SDXL: LCD from the SDXL-shaped testbed teacher against that teacher's own DDIM.

    python benchmarks/sdxl_miniature.py [--seeds 0 1 2] [--jobs 2] [--publish]

The teacher is assets/testbed/teacher-xl (``python -m lcm_distill.testbed.build --teachers teacher-xl``): two text
encoders (penultimate states side by side, pooled embedding), a "text_time" UNet with size/crop time ids, trained by
the testbed trainer on the digits. Each seed distils it with configs/lcd_tiny_cpu.yaml as Table 1's miniature does
(DDIM solver, k = 20, omega ~ U[2, 8]) for ``--lcd-steps``, through the same engine as SD; the EMA target is scored
like Table 1 (domain FID against the real test split and prompt accuracy, ``--num-images`` per cell, guidance
``--guidance``), and so is the teacher with DDIM (1/2/4/8 and 50 steps). The check is the paper's: the LCM at 2 and 4
steps beats the teacher's DDIM at the same steps. Finished steps are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout on sys.path (benchmarks/harness.py's one way)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ROOT, Step, evaluate_argv, publish, run_chains, seed_summary, train_argv

TEACHER = Path("assets/testbed/teacher-xl")
DATA = Path("outputs/testbed-digits")
EVAL_STEPS = [1, 2, 4, 8]
TITLE = "SDXL in miniature: LCD from the SDXL-shaped testbed teacher (benchmarks/sdxl_miniature.py)"


@dataclass
class Plan:
    out: Path
    seeds: list[int]
    lcd_steps: int
    num_images: int
    guidance: float
    jobs: int

    def run_dir(self, seed: int) -> Path:
        return self.out / f"lcd-seed{seed}"


def chains(plan: Plan) -> list[list[Step]]:
    """One chain per seed (train, then score the target) and one for the teacher's DDIM."""
    def score(name: str, model: Path, kind: str, steps: list[int], out: Path) -> Step:
        argv = evaluate_argv(model, kind, steps, out, guidance=plan.guidance, reference=ROOT / DATA,
                             num_images=plan.num_images, threads=1 if plan.jobs > 1 else 0)  # fmt: skip
        return Step(name, argv, out / "report.json")

    work = [[score("eval-teacher-ddim", ROOT / TEACHER, "teacher-ddim", [*EVAL_STEPS, 50], plan.out / "teacher")]]
    for seed in plan.seeds:
        run = plan.run_dir(seed)
        sets = [f"model.teacher={TEACHER}", f"data.dataset={DATA / 'train'}", f"train.seed={seed}",
                f"train.max_train_steps={plan.lcd_steps}", f"train.checkpoint_every={plan.lcd_steps}",
                "train.validation_prompts=[]"]  # fmt: skip
        work.insert(0, [Step(f"lcd-seed{seed}", [*train_argv("train_lcd.py", "configs/lcd_tiny_cpu.yaml", run, sets),
                                                 "--overwrite"], run / "target" / "model_index.json"),
                        score(f"eval-lcd-seed{seed}", run / "target", "lcm", EVAL_STEPS, run / "eval")])  # fmt: skip
    return work


def cell(stats: dict, steps: int, digits: int = 2) -> str:
    if steps not in stats:
        return "-"
    mean, std, lo, hi = (f"{v:.{digits}f}" for v in stats[steps])
    return mean if lo == hi else f"{mean} ± {std} [{lo}, {hi}]"


def render(plan: Plan, seconds: dict[str, float]) -> str:
    teacher = seed_summary([json.loads((plan.out / "teacher" / "report.json").read_text())])
    lcm = seed_summary([json.loads((plan.run_dir(s) / "eval" / "report.json").read_text()) for s in plan.seeds])
    cols = [*EVAL_STEPS, 50]
    head = "| method | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in cols) + " |\n|---|" + "---|" * len(cols)
    lines = [
        f"Command: `python benchmarks/sdxl_miniature.py --seeds {' '.join(map(str, plan.seeds))} --lcd-steps "
        f"{plan.lcd_steps} --num-images {plan.num_images} --guidance {plan.guidance:g} --publish`",
        "",
        f"{TEACHER} (SDXL-shaped: two text encoders, text_time UNet, epsilon) with DDIM, and the LCM distilled from it "
        f"(configs/lcd_tiny_cpu.yaml, {plan.lcd_steps} LCD steps, DDIM solver, k = 20, omega ~ U[2, 8]) over training "
        f"seeds {', '.join(map(str, plan.seeds))}: mean ± sample std [min, max]; guidance_scale {plan.guidance:g}, "
        f"{plan.num_images} images per cell, sampling seed 0, against the real test split.",
    ]
    for metric, label, digits in (("fid", "Domain FID (lower is better)", 2),
                                  ("prompt_accuracy", "Prompt accuracy (higher is better)", 3)):  # fmt: skip
        lines += ["", f"**{label}**", "", head,
                  "| teacher-xl (teacher-ddim) | " + " | ".join(cell(teacher[metric], s, digits) for s in cols) + " |",
                  "| LCM (lcm) | " + " | ".join(cell(lcm[metric], s, digits) for s in cols) + " |"]  # fmt: skip
    lines += ["", "Targets (the paper's Table 1 shape; the LCM's worst seed against the teacher):", ""]
    for steps in (2, 4):
        worst, ddim = lcm["fid"][steps][3], teacher["fid"][steps][0]
        verdict = "PASS" if worst < ddim else "MISS"
        lines.append(f"- {verdict}: LCM {steps}-step FID, worst seed {worst:.2f}, vs teacher DDIM {steps}-step "
                     f"{ddim:.2f}")
    train_s = [v for k, v in seconds.items() if k.startswith("lcd-")]
    lines += ["", f"Time per step (one torch thread each, {plan.jobs} side by side): LCD training "
              f"{min(train_s):.0f}-{max(train_s):.0f} s per seed, the teacher's evaluation "
              f"{seconds.get('eval-teacher-ddim', 0):.0f} s; {sum(seconds.values()) / 60:.1f} min summed."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-sdxl-miniature")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lcd-steps", type=int, default=300)
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--guidance", type=float, default=9.0, help="guidance_scale g (omega = g - 1), Table 1's 9")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--publish", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    if not (ROOT / TEACHER / "model_index.json").exists():
        p.error(f"{TEACHER} is missing: python -m lcm_distill.testbed.build --only teachers check "
                "--teachers teacher-xl")
    if not (ROOT / DATA / "test" / "metadata.jsonl").exists():
        p.error(f"{DATA} is missing: python -m lcm_distill.testbed.render --out {DATA}")
    plan = Plan(args.out, args.seeds, args.lcd_steps, args.num_images, args.guidance, args.jobs)
    work = chains(plan)
    run_chains(work, plan)
    timings_path = plan.out / "timings.json"  # per step, kept across reruns (finished steps are skipped)
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    timings.update({s.name: round(s.seconds, 1) for c in work for s in c if s.seconds is not None})
    timings_path.write_text(json.dumps(timings, indent=1))
    text = render(plan, timings)
    print(text)
    (plan.out / "summary.md").write_text(text + "\n")
    if args.publish:
        publish(text, ROOT / "benchmarks" / "RESULTS.md", "sdxl_miniature", TITLE, [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
