#!/usr/bin/env python
"""LCF (teacher-free Latent Consistency Fine-tuning) entry point: not built yet (issue: train_lcf.py)."""

import sys

if __name__ == "__main__":
    sys.exit("train_lcf.py is not implemented yet: LCF lands with the LCF issue. Nothing was run.")
