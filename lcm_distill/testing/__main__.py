"""``python -m lcm_distill.testing --out DIR [--prediction-type epsilon|v_prediction] [--family sd1|sd2|sdxl]``:
write a tiny SD folder.

Random weights from the offline test kit: it exercises loading, training and export end to end, but its images
mean nothing. The trained testbed teachers (assets/testbed/teacher-*) are the meaningful tiny models.
"""

from __future__ import annotations

import argparse
import sys

from .tiny import save_tiny_sd, save_tiny_sdxl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_distill.testing", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write (diffusers StableDiffusionPipeline layout)")
    p.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction"])
    p.add_argument("--family", default="sd2", choices=["sd1", "sd2", "sdxl"],
                   help="SD 2.x (default), SD 1.x, or SDXL-shaped (epsilon only; the engine refuses SDXL for now)")
    args = p.parse_args(argv)
    if args.family == "sdxl":
        print(save_tiny_sdxl(args.out))
        return 0
    print(save_tiny_sd(args.out, args.prediction_type, family=args.family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
