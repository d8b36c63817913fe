"""Deprecated path, kept for one release: use ``python -m lcm_distill.cli.evaluate`` (CHANGELOG 0.2)."""

import sys

from .cli.evaluate import *  # noqa: F403
from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
