"""Deprecated path, kept for one release: use ``python -m lcm_distill.cli.cache`` (CHANGELOG 0.2)."""

import sys

from .cli.cache import *  # noqa: F403
from .cli.cache import main

if __name__ == "__main__":
    sys.exit(main())
