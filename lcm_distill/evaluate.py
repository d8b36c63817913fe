"""Deprecated path, kept for one release (removed in 0.3): use ``python -m lcm_distill.cli.evaluate`` (CHANGELOG)."""

import sys

from .cli.evaluate import *  # noqa: F403
from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
