#!/usr/bin/env python
"""LCF: teacher-free Latent Consistency Fine-tuning of a trained LCM on a custom dataset (LCM paper Algorithm 4).

    python train_lcf.py --config configs/lcf_tiny_cpu.yaml [--set section.key=value ...] [--dry-run] [--resume latest]
    accelerate launch train_lcf.py --config configs/lcf_pokemon.yaml
"""

import sys

from lcm_distill.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], kind="lcf", prog="train_lcf.py"))
