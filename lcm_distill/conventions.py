"""Every convention that decides what a checkpoint means, named once (docs/design.md); lcm_distill.functional
re-exports them beside the math that uses them.

Plain Python on purpose (no torch, so the config and the command lines read them without a 3 s torch import), and
tests/test_conventions.py greps the code base for literals that restate them. The self-contained inference
pipeline (pipelines/pipeline_lcm.py) keeps its own copies so that it runs without this package; a test ties each
copy to the value here.

- Guidance: the paper's omega mixes ``(1 + omega) * cond - omega * uncond``; diffusers' ``guidance_scale`` g mixes
  ``g * cond - (g - 1) * uncond``, so g = omega + 1. Training samples and embeds omega; pipelines take g and embed
  ``omega = g - 1`` (:func:`omega_from_guidance_scale`; LCM paper §4.2, Eq. 11).
- Default guidance at inference: g = 8.5 (omega = 7.5), diffusers' ``LatentConsistencyModelPipeline`` default.
- Training timesteps: T = ``num_train_timesteps`` of the teacher's scheduler config, 1000 when the config omits it
  (diffusers' default); the skipping grid needs N | T (lcm_distill.functional.grid).
- dtype names: ``fp32 | bf16 | fp16`` in every config key and command-line flag (the torch dtypes they mean are in
  lcm_distill.functional.dtypes); the long torch spellings are accepted for one release.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

DEFAULT_GUIDANCE_SCALE = 8.5  # diffusers' LatentConsistencyModelPipeline default (omega = 7.5)
DEFAULT_NUM_TRAIN_TIMESTEPS = 1000  # diffusers' scheduler default; SD 1.x / 2.x use it

G = TypeVar("G")


DTYPE_NAMES = ("fp32", "bf16", "fp16")
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # deprecated spellings (generate --dtype)


def dtype_arg(name: str) -> str:
    """argparse ``type=`` of every --dtype flag: the canonical name (a deprecated spelling is mapped, an unknown one
    is passed through for argparse's ``choices`` to reject with the list)."""
    return DTYPE_ALIASES.get(name, name)


def omega_from_guidance_scale(guidance_scale: G) -> G:
    """The paper's omega for a diffusers guidance_scale g: omega = g - 1 (works on floats and tensors)."""
    return guidance_scale - 1


def guidance_scale_from_omega(omega: G) -> G:
    """The diffusers guidance_scale g of the paper's omega: g = omega + 1 (e.g. the paper's omega = 8 is g = 9)."""
    return omega + 1


def grid_problem(num_train_timesteps: int, num_points: int) -> str | None:
    """Why ``num_points`` solver points cannot form the skipping grid over T = ``num_train_timesteps`` (None: they
    can). N must divide T so that k = T / N and the grid [k-1, 2k-1, ..., T-1] ends at T-1 (LCM paper §4.3, diffusers'
    trailing spacing). The one check behind the config check, the preflight and SkippingGrid."""
    T, N = num_train_timesteps, num_points
    if N < 1 or N > T:
        return f"num_points (N={N}) must lie in [1, num_train_timesteps={T}]."
    if T % N:
        divisors = ", ".join(str(d) for d in range(10, min(T, 200) + 1) if T % d == 0)
        return (f"num_points (N={N}) must divide num_train_timesteps ({T}) so the grid ends at t={T - 1}; pick a "
                f"divisor such as {divisors}.")
    return None


def num_train_timesteps(scheduler_config: Mapping[str, Any]) -> int:
    """T of a diffusers scheduler config (dict or FrozenDict), with diffusers' default when the key is absent."""
    return int(scheduler_config.get("num_train_timesteps", DEFAULT_NUM_TRAIN_TIMESTEPS))
