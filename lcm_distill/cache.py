"""Deprecated path, kept for one release (removed in 0.3): use ``python -m lcm_distill.cli.cache`` (CHANGELOG)."""

import sys

from .cli.cache import *  # noqa: F403
from .cli.cache import main

if __name__ == "__main__":
    sys.exit(main())
