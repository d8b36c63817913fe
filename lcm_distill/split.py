"""Deprecated path, kept for one release (removed in 0.3): use ``python -m lcm_distill.cli.split`` (CHANGELOG)."""

import sys

from .cli.split import *  # noqa: F403
from .cli.split import main

if __name__ == "__main__":
    sys.exit(main())
