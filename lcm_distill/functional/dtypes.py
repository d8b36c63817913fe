"""The one dtype table: the names every config key and command-line flag accepts, and the torch dtype each means.

One spelling everywhere (``fp32 | bf16 | fp16``): ``model.frozen_dtype``, ``lcm_distill.cli.cache --dtype``,
``evaluate --dtype``, ``generate --dtype``. The long torch names (``float32``, ...) are still accepted by
:func:`dtype_from_name` for one release, because ``generate --dtype`` used them (CHANGELOG).
"""

from __future__ import annotations

import torch

from ..conventions import DTYPE_ALIASES, DTYPE_NAMES

DTYPES: dict[str, torch.dtype] = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def dtype_from_name(name: str, what: str = "dtype") -> torch.dtype:
    """torch dtype of ``name`` (fp32 | bf16 | fp16, or a deprecated torch spelling); ``what`` names the key/flag."""
    key = DTYPE_ALIASES.get(name, name)
    if key not in DTYPES:
        raise ValueError(f"{what}={name!r} is not one of {list(DTYPES)}.")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """The table's name of a torch dtype (fp32 | bf16 | fp16)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"{dtype} has no name in the dtype table {list(DTYPES)}.")
