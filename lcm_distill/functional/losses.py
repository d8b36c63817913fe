"""Distance d(., .) of the consistency loss (LCM paper Eq. 13; iCT for pseudo-Huber).

All losses are computed in fp32 and averaged over every element, as diffusers' LCM scripts do, so a loss
value means the same in fp16/bf16 runs.
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


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    return torch.mean(torch.abs(pred.float() - target.float()))


# objective.loss -> distance. A new loss is one function above plus one line here (docs/extending.md); a loss with
# a scale takes it as ``c`` (objective.huber_c).
LOSSES: dict[str, Callable[..., Tensor]] = {"l2": l2_loss, "huber": pseudo_huber_loss, "l1": l1_loss}
LOSS_TYPES = tuple(LOSSES)


def consistency_loss(pred: Tensor, target: Tensor, loss_type: str = "l2", huber_c: float = 1e-3) -> Tensor:
    """d(pred, target) with the registered loss ``loss_type`` (:data:`LOSSES`), in fp32."""
    if loss_type not in LOSSES:
        raise ValueError(f"loss_type={loss_type!r} is not supported; use one of {list(LOSSES)}.")
    fn = LOSSES[loss_type]
    return fn(pred, target, c=huber_c) if "c" in inspect.signature(fn).parameters else fn(pred, target)
