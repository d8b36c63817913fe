"""Deprecated path, kept for one release: use ``python -m lcm_distill.cli.generate`` (CHANGELOG 0.2)."""

import sys

from .cli.generate import *  # noqa: F403
from .cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
