"""Target network update theta- <- mu theta- + (1 - mu) theta (LCM Algorithm 1 line 7), fused with _foreach_lerp_."""

from __future__ import annotations

import torch
from torch import nn

EMA_IMPLS = ("foreach", "loop")  # train.ema_impl


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, mu: float, impl: str = "foreach") -> None:
    """In place over matching parameters; lerp(theta-, theta, 1 - mu) == mu theta- + (1 - mu) theta up to an ulp.

    mu = 1 leaves the target unchanged, mu = 0 copies the student. Buffers (none that matter in SD UNets) are copied.
    ``impl`` (train.ema_impl): "foreach" is one fused multi-tensor kernel; "loop" is the anchors' per-tensor
    ``mul_(mu).add_(theta, alpha=1 - mu)``, kept so benchmarks/train_step.py can measure the difference.
    """
    from ..models import AdapterEMA

    adapters = isinstance(target, AdapterEMA)  # LoRA: the EMA follows the trained tensors only
    t_params = [p for p in target.parameters()]
    sources = target.tracked(online) if adapters else online.parameters()
    o_params = [p.detach().to(t.dtype) for p, t in zip(sources, t_params, strict=True)]
    if mu == 1.0:
        return
    if impl == "loop":
        for t, o in zip(t_params, o_params, strict=True):
            t.mul_(mu).add_(o, alpha=1.0 - mu)
    elif impl == "foreach":
        torch._foreach_lerp_(t_params, o_params, 1.0 - mu)
    else:
        raise ValueError(f"train.ema_impl={impl!r} is not one of {list(EMA_IMPLS)}.")
    if not adapters:
        for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
            tb.copy_(ob)
