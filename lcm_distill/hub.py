"""Hub ids versus local paths, and where a hub id is read from: the one place every command asks.

A value is a local path when it exists, or when it cannot be a hub id (absolute, ``./``, ``~``, more than one
slash); anything else (``org/name`` or a bare ``name``) is a hub id. Offline mode is what huggingface_hub, datasets
and transformers read (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``TRANSFORMERS_OFFLINE``). Offline means "use the
local cache", not "refuse hub ids": :func:`model_location` and :func:`dataset_location` resolve a hub id to its
cached copy (huggingface_hub's ``hub/models--ORG--NAME/snapshots/<commit>``, written by ``hf download`` or any earlier
online run; for datasets also the prepared cache that ``datasets.load_dataset`` reads offline) and raise
:class:`HubUnavailable` - with the download command - only when there is none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = ("1", "true", "yes", "on")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class HubUnavailable(LookupError):
    """A hub id that cannot be read: offline and not in the cache. The message says how to fetch it."""


def offline() -> bool:
    """True when any of HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE is set to a true value."""
    return any(os.environ.get(v, "").lower() in _TRUE for v in OFFLINE_VARIABLES)


def is_local_path(value: str) -> bool:
    """A path rather than a hub id: it exists, or it cannot be a hub id (absolute, ./, ~, more than one slash)."""
    return Path(value).expanduser().exists() or not _HUB_ID.match(value)


def offline_note() -> str:
    set_ = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").lower() in _TRUE]
    return f"the Hub is offline here ({'/'.join(set_)})"


def cached_snapshot(repo_id: str, repo_type: str = "model", revision: str | None = None) -> Path | None:
    """The folder of ``repo_id`` in huggingface_hub's cache (HF_HUB_CACHE), or None when it is not there."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, a bad id, a partial snapshot: all mean "not cached"
        return None


def model_location(value: str, revision: str | None = None) -> str:
    """What ``from_pretrained`` should be given for a model ``value``: a local path as it is; a hub id as it is
    online, and offline its cached snapshot folder (HubUnavailable when it is not cached)."""
    if is_local_path(value) or not offline():
        return value
    snapshot = cached_snapshot(value, "model", revision)
    if snapshot is None:
        raise HubUnavailable(f"{value} is a Hub id, {offline_note()} and it is not in the local cache; download it "
                             f"once while online (hf download {value}) or give a local folder.")  # fmt: skip
    return str(snapshot)


def dataset_location(value: str, config_name: str | None = None) -> str:
    """What to load a dataset ``value`` from: a local path as it is; a hub id as it is online; offline, the cached
    snapshot folder (``hf download ID --repo-type dataset``) or the hub id itself when ``datasets`` has it prepared
    in its own cache. HubUnavailable when neither holds it."""
    if is_local_path(value) or not offline():
        return value
    snapshot = cached_snapshot(value, "dataset")
    if snapshot is not None:
        return str(snapshot)
    import datasets

    try:
        datasets.load_dataset_builder(value, config_name)  # datasets' own offline lookup of its prepared cache
    except Exception as err:
        raise HubUnavailable(
            f"{value} is a Hub dataset id, {offline_note()} and it is in neither the Hub cache nor the datasets "
            f"cache ({type(err).__name__}); download it once while online (hf download {value} --repo-type "
            f"dataset, or lcm-distill-split --dataset {value} --out DIR) or give a local folder."
        ) from err
    return value
