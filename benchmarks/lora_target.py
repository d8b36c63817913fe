"""LCM-LoRA's consistency target: none (the student under no_grad, as diffusers' LCM-LoRA scripts do; train.ema_decay
0) against an EMA of the adapters (models.AdapterEMA; train.ema_decay mu), several training seeds each, on the digits
testbed. Held-out testbed FID and prompt accuracy at 1/2/4/8 steps, reported as mean ± sample std over the seeds; a
difference is called only when the two means are further apart than the two spreads added.

    python benchmarks/lora_target.py [--seeds 0 1 2] [--mus 0 0.95] [--train-steps 300] [--omega-conditioned]
        [--jobs 2] [--publish]
    python benchmarks/lora_target.py --versus [--publish]   # fixed omega vs omega-conditioned, from both runs

The LoRA settings are benchmarks/lora_compare.sh's (configs/lcd_tiny_cpu.yaml, rank 16, alpha 16, lr 1e-3, fixed
omega 3, evaluated at 200 images, seed 0); ``--omega-conditioned`` trains an omega input beside the adapters instead
(omega ~ U[2, 8], evaluated at guidance 4 = omega 3). Finished runs and evaluations are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the checkout on sys.path (benchmarks/harness.py's one way)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ROOT, Step, evaluate_argv, publish, run_chains, seed_summary, spread_verdict, train_argv

LORA = ["model.lora.enabled=true", "model.lora.rank=16", "model.lora.alpha=16", "optim.learning_rate=1e-3",
        "objective.omega_fixed=3", "train.validation_prompts=[]", "train.checkpoint_every=100000"]  # fmt: skip
EVAL_STEPS = [1, 2, 4, 8]
METRICS = ("fid", "prompt_accuracy")


@dataclass
class Plan:
    out: Path
    seeds: list[int]
    mus: list[float]
    train_steps: int
    num_images: int
    jobs: int
    omega_conditioned: bool = False

    def run_dir(self, mu: float, seed: int) -> Path:
        return self.out / f"mu{mu:g}-seed{seed}"

    def report(self, mu: float, seed: int) -> Path:
        return self.run_dir(mu, seed) / "eval" / "report.json"


def chains(plan: Plan, reference: Path) -> list[list[Step]]:
    work = []
    for seed in plan.seeds:
        for mu in plan.mus:
            run = plan.run_dir(mu, seed)
            lora = [*LORA[:4], "model.lora.omega_conditioned=true", *LORA[5:]] if plan.omega_conditioned else LORA
            sets = [*lora, f"train.ema_decay={mu:g}", f"train.seed={seed}", f"train.max_train_steps={plan.train_steps}"]
            argv = [*train_argv("train_lcd.py", "configs/lcd_tiny_cpu.yaml", run, sets), "--overwrite"]
            ev = evaluate_argv(run / "student", "lcm", EVAL_STEPS, run / "eval", guidance=4.0, reference=reference,
                               num_images=plan.num_images, batch_size=50, threads=1)  # fmt: skip
            work.append([Step(f"train-mu{mu:g}-seed{seed}", argv, run / "student" / "model_index.json"),
                         Step(f"eval-mu{mu:g}-seed{seed}", ev, plan.report(mu, seed))])  # fmt: skip
    return work


def summarise(reports: dict[float, list[dict]]) -> dict[float, dict[str, dict[int, tuple[float, ...]]]]:
    """{mu: {metric: {steps: (mean, sample std, min, max)}}} over each mu's seeds (harness.seed_summary)."""
    return {mu: seed_summary(runs, METRICS) for mu, runs in reports.items()}


verdict = spread_verdict


def table(summary: dict, plan: Plan, minutes: float | None = None) -> str:
    mus = sorted(summary)
    lines = [f"{len(plan.seeds)} training seeds ({', '.join(map(str, plan.seeds))}), {plan.train_steps} steps, "
             f"{plan.num_images} images per cell; mean ± sample std (min-max)."
             + (f" {minutes:.0f} min of compute this run." if minutes and minutes >= 1 else ""),
             "", "| target | " + " | ".join(f"FID {s} step{'s' * (s > 1)}" for s in EVAL_STEPS)
             + " | " + " | ".join(f"acc. {s}" for s in EVAL_STEPS) + " |",
             "|---" * (1 + 2 * len(EVAL_STEPS)) + "|"]  # fmt: skip
    for mu in mus:
        name = "none (mu 0)" if mu == 0 else f"EMA of adapters, mu {mu:g}"
        cells = [f"{m:.2f} ± {s:.2f} ({lo:.2f}-{hi:.2f})" for m, s, lo, hi in summary[mu]["fid"].values()]
        cells += [f"{m:.3f} ± {s:.3f}" for m, s, _, _ in summary[mu]["prompt_accuracy"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(mus) >= 2:
        a, b = summary[mus[0]], summary[mus[-1]]
        calls = [f"{s} step{'s' * (s > 1)}: {verdict(a['fid'][s], b['fid'][s])}" for s in a["fid"] if s in b["fid"]]
        lines += ["", f"FID, mu {mus[0]:g} vs mu {mus[-1]:g}: " + "; ".join(calls) + "."]
    return "\n".join(lines)


def versus_table(fixed: Plan, omega: Plan) -> str:
    """Fixed-omega LoRA (at its omega 3) against the omega-conditioned LoRA (at guidance 4 = omega 3), per target,
    over the seeds both runs share: benchmarks/lora_compare.sh's question, with seeds and the spread rule."""
    seeds = [s for s in fixed.seeds if s in omega.seeds]
    lines = [f"Fixed omega (3) vs omega-conditioned LoRA (omega ~ U[2, 8], evaluated at omega 3), {len(seeds)} "
             f"training seeds ({', '.join(map(str, seeds))}), {fixed.train_steps} steps; FID mean ± std (min-max); a "
             "difference is called only when the means are further apart than the two std added.", "",
             "| target | LoRA | " + " | ".join(f"FID {s} step{'s' * (s > 1)}" for s in EVAL_STEPS) + " |",
             "|---|---" + "|---" * len(EVAL_STEPS) + "|"]  # fmt: skip
    calls = []
    for mu in [m for m in fixed.mus if m in omega.mus]:
        pair = {}
        for name, plan in (("fixed omega", fixed), ("omega-conditioned", omega)):
            pair[name] = seed_summary([json.loads(plan.report(mu, s).read_text()) for s in seeds], ("fid",))["fid"]
            cells = [f"{m:.2f} ± {sd:.2f} ({lo:.2f}-{hi:.2f})" for m, sd, lo, hi in pair[name].values()]
            target = "none (mu 0)" if mu == 0 else f"EMA, mu {mu:g}"
            lines.append(f"| {target} | {name} | " + " | ".join(cells) + " |")
        a, b = pair["fixed omega"], pair["omega-conditioned"]
        calls.append(f"mu {mu:g}: " + "; ".join(f"{s} step{'s' * (s > 1)} {verdict(a[s], b[s])}" + (
            f" ({'fixed' if a[s][0] < b[s][0] else 'omega-conditioned'} better)" if verdict(a[s], b[s]).startswith(
                "differs") else "") for s in a if s in b))  # fmt: skip
    return "\n".join([*lines, "", *(f"- {c}." for c in calls)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mus", type=float, nargs="+", default=[0.0, 0.95])
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--omega-conditioned", action="store_true", help="an omega input beside the adapters")
    p.add_argument("--out", type=Path, default=None, help="default: outputs/bench-lora-target[-omega]")
    p.add_argument("--versus", action="store_true",
                   help="no training: compare the finished fixed-omega and omega-conditioned runs (default folders)")
    p.add_argument("--publish", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    import time

    if args.versus:
        fixed, omega = (Plan(ROOT / "outputs" / f"bench-lora-target{sfx}", args.seeds, args.mus, args.train_steps,
                             args.num_images, args.jobs, bool(sfx)) for sfx in ("", "-omega"))  # fmt: skip
        missing = [str(pl.report(mu, s)) for pl in (fixed, omega) for mu in pl.mus for s in pl.seeds
                   if not pl.report(mu, s).exists()]  # fmt: skip
        if missing:
            p.error(f"--versus needs both runs finished; missing {missing[0]} (run without --versus, and with "
                    "--omega-conditioned, first)")
        text = versus_table(fixed, omega)
        print(text)
        if args.publish:
            publish(text, ROOT / "benchmarks" / "RESULTS.md", "lora_versus",
                    "LCM-LoRA fixed omega vs omega-conditioned, seeded (benchmarks/lora_target.py --versus)", [])
        return 0

    out = args.out or ROOT / "outputs" / ("bench-lora-target-omega" if args.omega_conditioned else "bench-lora-target")
    plan = Plan(out, args.seeds, args.mus, args.train_steps, args.num_images, args.jobs, args.omega_conditioned)
    reference = ROOT / "outputs" / "testbed-digits"
    if not (reference / "testbed.json").exists():
        subprocess.run([sys.executable, "-m", "lcm_distill.testbed.render", "--out", str(reference)], cwd=ROOT,
                       check=True)  # fmt: skip
    t0 = time.perf_counter()
    run_chains(chains(plan, reference), plan)
    reports = {mu: [json.loads(plan.report(mu, s).read_text()) for s in plan.seeds] for mu in plan.mus}
    text = table(summarise(reports), plan, (time.perf_counter() - t0) / 60)
    print(text)
    if args.publish:
        key, title = ("lora_target_omega", "LCM-LoRA target, omega-conditioned LoRA (benchmarks/lora_target.py "
                      "--omega-conditioned)") if args.omega_conditioned else (
                      "lora_target", "LCM-LoRA target: none vs an EMA of the adapters (benchmarks/lora_target.py)")
        publish(text, ROOT / "benchmarks" / "RESULTS.md", key, title, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
