"""Guidance scale omega: sampling, embedding and the CFG combination (LCM paper §4.2, Eq. 10-12).

The omega / guidance_scale convention is stated in :mod:`lcm_distill.conventions` (re-exported here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..conventions import omega_from_guidance_scale

__all__ = ["cfg_combine", "omega_embedding", "omega_from_guidance_scale", "sample_omega"]


def sample_omega(
    batch_size: int,
    omega_min: float,
    omega_max: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """omega ~ U[omega_min, omega_max] per example (Algorithm 1 line 3), fp32; drawn on CPU for reproducibility."""
    if omega_min > omega_max:
        raise ValueError(f"omega_min={omega_min} must not exceed omega_max={omega_max}.")
    u = torch.rand(batch_size, generator=generator, dtype=torch.float32)
    return (omega_min + (omega_max - omega_min) * u).to(device)


def omega_embedding(omega: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sinusoidal embedding of omega fed to the student as ``timestep_cond`` (Meng et al. 2023 style).

    omega is scaled by 1000; frequencies exp(-i ln(10000) / (dim//2 - 1)); the sin half comes first, an odd
    ``dim`` gets one zero column. The arithmetic order is that of diffusers'
    ``LatentConsistencyModelPipeline.get_guidance_scale_embedding`` so the result is bit-identical.
    """
    if omega.ndim != 1:
        raise ValueError(f"omega must be 1-D (one value per sample), got shape {tuple(omega.shape)}.")
    half = dim // 2
    if half < 2:
        raise ValueError(f"time_cond_proj_dim={dim} is too small for the omega embedding; use at least 4.")
    w = omega * 1000.0
    freq = torch.log(torch.tensor(10000.0)) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=dtype) * -freq)
    arg = w.to(dtype)[:, None] * freq[None, :].to(w.device)
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def cfg_combine(cond: Tensor, uncond: Tensor, omega: Tensor | float) -> Tensor:
    """(1 + omega) cond - omega uncond (paper Eq. 11/17); omega is a scalar or (B,) broadcast per sample."""
    if isinstance(omega, Tensor) and omega.ndim == 1:
        omega = omega.reshape(omega.shape[0], *([1] * (cond.ndim - 1))).to(cond.dtype)
    return cond + omega * (cond - uncond)
