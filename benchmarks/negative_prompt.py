"""Does a negative prompt steer an LCM? On the digits testbed: prompts that name no colour ("a digit 3"), then the
same with a negative prompt naming one colour under real CFG; the testbed classifier counts each colour's share.
Also the per-step latency of CFG (2x UNet batch) vs none.

    python benchmarks/negative_prompt.py --model outputs/demo/lcd/target [--num-images 200] [--cfg-scale 2]

Needs the demo's LCM (bash scripts/demo.sh). Prints one line per setting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks.* and lcm_distill
from lcm_distill.pipelines import LCMPipeline

from lcm_distill.testbed.digits import COLOR_NAMES
from lcm_distill.testbed.scorers import load_classifier


def colour_shares(pipe, classifier, prompts, steps, seed, negatives=None, **kw) -> tuple[list[float], float]:
    images, t0 = [], time.perf_counter()
    for i in range(0, len(prompts), 50):
        g = [torch.Generator().manual_seed(seed + j) for j in range(i, min(i + 50, len(prompts)))]
        neg = {} if negatives is None else {"negative_prompt": negatives[i : i + 50]}
        images.append(pipe(prompts[i : i + 50], num_inference_steps=steps, generator=g, output_type="pt", **kw,
                           **neg).images)  # fmt: skip
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        _, colour = classifier(torch.cat(images) * 2 - 1)
    counts = torch.bincount(colour.argmax(1), minlength=len(COLOR_NAMES)).float()
    return (counts / counts.sum()).tolist(), seconds / (len(prompts) * steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="outputs/demo/lcd/target")
    p.add_argument("--testbed-dir", default="assets/testbed")
    p.add_argument("--num-images", type=int, default=200)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--cfg-scale", type=float, default=2.0)
    p.add_argument("--negative", default="red", choices=COLOR_NAMES)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    pipe = LCMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier(args.testbed_dir).eval()
    prompts = [f"a digit {i % 10}" for i in range(args.num_images)]
    negatives = [f"a {args.negative} digit {i % 10}" for i in range(args.num_images)]
    kw = dict(guidance_scale=args.guidance_scale)
    settings = [("no CFG", {}), (f"cfg {args.cfg_scale:g}, empty negative", {"cfg_scale": args.cfg_scale}),
                (f"cfg {args.cfg_scale:g}, negative '{negatives[0]}'",
                 {"cfg_scale": args.cfg_scale, "negatives": negatives})]  # fmt: skip
    for name, extra in settings:
        shares, per_step = colour_shares(pipe, classifier, prompts, args.steps, 0, **kw, **extra)
        text = ", ".join(f"{c} {s:.2f}" for c, s in zip(COLOR_NAMES, shares, strict=True))
        print(f"{name:40s} colour shares: {text} | {1000 * per_step:.1f} ms per image-step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
