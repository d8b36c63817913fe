"""Consistency-function parameterisation (LCM paper Eq. 9; Consistency Models §3.1 / App. C).

f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t), with the boundary condition f(x, 0) = x enforced by
c_skip(0) = 1, c_out(0) = 0. Scalings follow diffusers' LCMScheduler (``timestep_scaling`` s = 10,
sigma_data = 0.5) so that our students sample identically in stock diffusers:
c_skip = sigma_d^2 / ((s t)^2 + sigma_d^2), c_out = s t / sqrt((s t)^2 + sigma_d^2).
"""

from __future__ import annotations

from torch import Tensor

SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def boundary_scalings(
    t: Tensor, sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING
) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out) at integer-valued timesteps t, in t's float dtype (fp32 for integer t)."""
    scaled = t.float() * timestep_scaling if not t.is_floating_point() else t * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def consistency_function(x: Tensor, x0_hat: Tensor, c_skip: Tensor, c_out: Tensor) -> Tensor:
    """f = c_skip x + c_out x0_hat; c_skip/c_out are (B,) and broadcast over x's trailing dims."""
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return c_skip.reshape(shape) * x + c_out.reshape(shape) * x0_hat
