"""Hub ids versus local paths, and whether the Hub may be reached: the one place every command asks.

A value is a local path when it exists, or when it cannot be a hub id (absolute, ``./``, ``~``, more than one
slash); anything else (``org/name`` or a bare ``name``) is a hub id. Offline mode is huggingface_hub's and
datasets' own switches (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``), read the way those libraries read them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set to a true value."""
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def is_local_path(value: str) -> bool:
    """A path rather than a hub id: it exists, or it cannot be a hub id (absolute, ./, ~, more than one slash)."""
    return Path(value).expanduser().exists() or not _HUB_ID.match(value)
