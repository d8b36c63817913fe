"""Every fast-path switch leaves the loss of a step equal to the plain run's, within a stated tolerance.

The cached-latents switch is checked in test_cache.py (equal to 1e-5). Tolerances here are relative, on the loss of
step 1 (before any update, so only the switch differs):
- frozen bf16 / fp16: the teacher, VAE and text encoder run in 8 / 11 mantissa bits; measured deviations on the
  tiny kit are a few 1e-3 (bf16) and ~1e-4 (fp16); the bounds leave ~10x room and still catch a dtype-policy bug
  (e.g. targets left in half precision or a wrong cast), which moves the loss by whole percents or more;
- EMA loop vs fused: the same rule up to rounding; checked on step 2's loss (the target moved once) and on weights;
- torch.compile: the same graph, reordered kernels (slow: tracing the tiny UNets takes minutes on a CPU).
"""

from __future__ import annotations

import pytest
import torch

from lcm_distill.engine import ema_update, train

SWITCHES = {
    "frozen-bf16": (("model.frozen_dtype=bf16",), 5e-2),
    "frozen-fp16": (("model.frozen_dtype=fp16",), 5e-3),
    "ema-loop": (("train.ema_impl=loop",), 1e-5),
    "adamw-loop": (("optim.adamw_impl=loop",), 1e-5),
    "adamw-foreach": (("optim.adamw_impl=foreach",), 1e-5),
}
PLAIN = ("train.max_train_steps=2", "optim.adam_epsilon=1.0", "optim.learning_rate=0.05")  # see test_cache.py


@pytest.fixture(scope="module")
def plain_losses(base_overrides, tmp_path_factory):
    from lcm_distill.config import load_config

    out = tmp_path_factory.mktemp("plain")
    return train(load_config(None, [*base_overrides, *PLAIN, f"train.output_dir={out}"])).losses


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(a)


@pytest.mark.parametrize("name", list(SWITCHES))
def test_a_speed_switch_keeps_the_loss_of_a_step(plain_losses, make_cfg, name):
    overrides, tol = SWITCHES[name]
    losses = train(make_cfg(*PLAIN, *overrides)).losses
    assert _rel(plain_losses[0], losses[0]) <= tol, (name, plain_losses, losses)
    if name in ("ema-loop", "adamw-loop", "adamw-foreach"):  # step 2 follows one optimiser update + EMA
        assert _rel(plain_losses[1], losses[1]) <= tol, (plain_losses, losses)


def test_ema_loop_and_fused_agree_with_the_rule():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5))
    targets = [torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5)) for _ in range(2)]
    targets[1].load_state_dict(targets[0].state_dict())
    expected = [0.9 * t.detach() + 0.1 * o.detach() for t, o in zip(targets[0].parameters(), online.parameters(),
                                                                       strict=True)]  # fmt: skip
    ema_update(targets[0], online, 0.9, "foreach")
    ema_update(targets[1], online, 0.9, "loop")
    for a, b, e in zip(targets[0].parameters(), targets[1].parameters(), expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(b, e, atol=1e-7, rtol=1e-6)
    with pytest.raises(ValueError, match=r"train\.ema_impl"):
        ema_update(targets[0], online, 0.9, "fused")


@pytest.mark.slow
def test_compiled_unets_keep_the_loss(plain_losses, make_cfg):
    losses = train(make_cfg(*PLAIN, "model.compile=true", "model.compile_backend=aot_eager")).losses
    for a, b in zip(plain_losses, losses, strict=True):
        assert _rel(a, b) <= 1e-5, (plain_losses, losses)
