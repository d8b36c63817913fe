"""Command-line programs (thin: parse flags, call the library). Each runs as ``python -m lcm_distill.cli.<name>``.

| module | console script | what it does |
|---|---|---|
| ``train`` | ``train_lcd.py`` / ``train_lcf.py`` / ``lcm-distill-train`` | training (``--config FILE [--set k=v]``) |
| ``cache`` | ``lcm-distill-cache`` | precompute the latent/text cache of a run's data |
| ``split`` | ``lcm-distill-split`` | deterministic train/test imagefolders (the paper's 90/10 for LCF) |
| ``generate`` | ``lcm-distill-generate`` | images from an LCM folder or Hub id |
| ``evaluate`` | ``lcm-distill-evaluate`` | FID / KID / CLIP score / latency across step counts |

Their ``--help`` texts are committed under docs/cli/ and checked by tests/test_cli_help.py
(regenerate with ``python -m lcm_distill.cli.help --write``).
"""

from .train import build_parser, main

__all__ = ["build_parser", "main"]
