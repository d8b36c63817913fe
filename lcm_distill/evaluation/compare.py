"""``python -m lcm_distill.evaluation.compare a/report.json b/report.json ...``: one table and one plot for many runs.

The paper's Table 1 puts teacher DDIM, DPM-Solver, DPM-Solver++ and the LCM side by side at 1/2/4/8 steps; each of
those is one ``python -m lcm_distill.cli.evaluate`` run, and this command lines them up (markdown tables per metric
and a combined quality-vs-steps plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .report import load_report, markdown_table, plot_quality_vs_steps


def compare(report_paths: list[str | Path], metrics: list[str], guidance_scale: float | None = None) -> str:
    """Markdown: one Table-1-style table per metric (rows = runs, columns = step counts)."""
    reports = [load_report(p) for p in report_paths]
    parts = []
    for metric in metrics:
        parts.append(f"**{metric}**\n\n" + markdown_table(reports, metric, guidance_scale))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_distill.evaluation.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="report.json files written by python -m lcm_distill.cli.evaluate")
    p.add_argument("--metrics", nargs="+", default=["fid", "prompt_accuracy"],
                   help="fid, latency, or any score key (prompt_accuracy, clip_score, ...)")
    p.add_argument("--guidance", type=float, default=None, help="only rows with this guidance_scale")
    p.add_argument("--out", help="write the markdown here (default: print)")
    p.add_argument("--plot", help="write a combined quality-vs-steps PNG here")
    args = p.parse_args(argv)
    missing = [r for r in args.reports if not Path(r).is_file()]
    if missing:
        p.error(f"reports: no such file {missing[0]}")
    text = compare(args.reports, args.metrics, args.guidance)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    else:
        print(text)
    if args.plot:
        plot_quality_vs_steps([load_report(r) for r in args.reports], args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
