"""``python -m lcm_distill.testing --out DIR [--prediction-type epsilon|v_prediction]``: write a tiny SD folder.

Random weights from the offline test kit: it exercises loading, training and export end to end, but its images
mean nothing. The trained testbed teachers (assets/testbed/teacher-*) are the meaningful tiny models.
"""

from __future__ import annotations

import argparse
import sys

from .tiny import save_tiny_sd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lcm_distill.testing", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write (diffusers StableDiffusionPipeline layout)")
    p.add_argument("--prediction-type", default="epsilon", choices=["epsilon", "v_prediction"])
    args = p.parse_args(argv)
    print(save_tiny_sd(args.out, args.prediction_type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
