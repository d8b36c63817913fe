"""Distance d(., .) of the consistency loss (LCM paper Eq. 13; iCT for pseudo-Huber).

All losses are computed in fp32 and averaged over every element, as diffusers' LCM scripts do, so a loss
value means the same in fp16/bf16 runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSS_TYPES = ("l2", "huber", "l1")


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


def consistency_loss(pred: Tensor, target: Tensor, loss_type: str = "l2", huber_c: float = 1e-3) -> Tensor:
    """Dispatch on ``loss_type`` in {l2, huber, l1}."""
    if loss_type == "l2":
        return l2_loss(pred, target)
    if loss_type == "huber":
        return pseudo_huber_loss(pred, target, huber_c)
    if loss_type == "l1":
        return l1_loss(pred, target)
    raise ValueError(f"loss_type={loss_type!r} is not supported; use one of {LOSS_TYPES}.")
