"""Deprecated path, kept for one release (removed in 0.3): use ``python -m lcm_distill.cli.generate`` (CHANGELOG)."""

import sys

from .cli.generate import *  # noqa: F403
from .cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
