"""Deprecated path, kept for one release: use ``python -m lcm_distill.cli.split`` (CHANGELOG 0.2)."""

import sys

from .cli.split import *  # noqa: F403
from .cli.split import main

if __name__ == "__main__":
    sys.exit(main())
