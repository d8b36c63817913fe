"""Distance d(., .) of the consistency loss (LCM paper Eq. 13; iCT for pseudo-Huber).

All losses are computed in fp32 and averaged over every element (the per-sample "pseudo_huber" over the batch),
as diffusers' LCM scripts do, so a loss value means the same in fp16/bf16 runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor


def l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    return torch.mean((pred.float() - target.float()) ** 2)


def pseudo_huber_loss(pred: Tensor, target: Tensor, c: float = 1e-3) -> Tensor:
    """mean(sqrt(d^2 + c^2) - c) (Song & Dhariwal 2023, improved CT): l2-like near 0, l1-like for |d| >> c."""
    d = pred.float() - target.float()
    return torch.mean(torch.sqrt(d**2 + c**2) - c)


ICT_HUBER_C = 0.00054  # improved CT's c = 0.00054 sqrt(d) for d-dimensional samples (Song & Dhariwal 2023, §3.3)


def pseudo_huber_ict_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Improved CT's pseudo-Huber on each sample as a whole, with c scaled to the sample size d = C*h*w:
    mean_b (sqrt(||d_b||^2 + c^2) - c) / sqrt(d), c = 0.00054 sqrt(d) (Song & Dhariwal 2023, Eq. 9 and §3.3).

    Why (issue 11): the element-wise "huber" with diffusers' c = 0.001 is a per-element l1 for any error above 1e-3;
    this one is a per-sample l2 norm, so every sample's gradient has about unit length whatever its error - a
    high-noise sample with a large consistency gap cannot drown the rest. Dividing by sqrt(d) only puts the value
    on the per-element rms scale (the optimum and, under Adam, the updates are unchanged).
    """
    d = (pred.float() - target.float()).flatten(1)
    dim = d.shape[1]
    c = ICT_HUBER_C * dim**0.5
    return torch.mean(torch.sqrt(d.pow(2).sum(1) + c**2) - c) / dim**0.5


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    return torch.mean(torch.abs(pred.float() - target.float()))


# objective.loss -> distance. A new loss is one function above plus one line here (docs/extending.md); a loss with
# a scale takes it as ``c`` (objective.huber_c).
LOSSES: dict[str, Callable[..., Tensor]] = {
    "l2": l2_loss,
    "huber": pseudo_huber_loss,
    "pseudo_huber": pseudo_huber_ict_loss,
    "l1": l1_loss,
}
LOSS_TYPES = tuple(LOSSES)


def consistency_loss(pred: Tensor, target: Tensor, loss_type: str = "l2", huber_c: float = 1e-3) -> Tensor:
    """d(pred, target) with the registered loss ``loss_type`` (:data:`LOSSES`), in fp32."""
    if loss_type not in LOSSES:
        raise ValueError(f"loss_type={loss_type!r} is not supported; use one of {list(LOSSES)}.")
    fn = LOSSES[loss_type]
    return fn(pred, target, c=huber_c) if "c" in inspect.signature(fn).parameters else fn(pred, target)
