#!/usr/bin/env python
"""LCD: distil a Stable Diffusion teacher into an omega-conditioned latent consistency model.

    python train_lcd.py --config configs/lcd_tiny_cpu.yaml [--set section.key=value ...] [--dry-run] [--resume latest]
    accelerate launch train_lcd.py --config configs/lcd_sd21_base_512.yaml
"""

import sys

from lcm_distill.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], kind="lcd", prog="train_lcd.py"))
