"""The LoRA EMA target (models.AdapterEMA): an EMA of the adapters only, whose forward equals a full UNet copy
holding those adapters; it follows the EMA rule, checkpoints and resumes bitwise, and is what lora/ exports."""

from __future__ import annotations

import copy

import pytest
import torch

from lcm_distill.engine import load_run_models, train
from lcm_distill.engine.ema import ema_update
from lcm_distill.models import AdapterEMA, as_unet

LORA = ("model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=8", "train.ema_decay=0.9")


def _perturb(module, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


def test_adapter_ema_is_an_adapter_copy_whose_forward_equals_a_full_copy(make_cfg):
    models = load_run_models(make_cfg(*LORA))
    student, target = models.student, models.target
    assert isinstance(target, AdapterEMA)
    n_adapter = sum(p.numel() for p in student.parameters() if p.requires_grad)
    assert sum(p.numel() for p in target.parameters()) == n_adapter < sum(p.numel() for p in student.parameters()) / 5
    assert all("lora_" in n for n in target.names)
    _perturb(student, 0.1, seed=0)  # the EMA (still the initial adapters) and the student now differ
    full = copy.deepcopy(student)  # the reference: a whole second UNet holding the EMA adapters
    with torch.no_grad():
        for p, e in zip(target.tracked(full), target.parameters(), strict=True):
            p.copy_(e)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([500, 250]), torch.randn(2, 77, 32)
    with torch.no_grad():
        ema_out = target(x, t, encoder_hidden_states=ctx).sample
        torch.testing.assert_close(ema_out, full(x, t, encoder_hidden_states=ctx).sample, atol=1e-6, rtol=0)
        online = student(x, t, encoder_hidden_states=ctx).sample
        assert (ema_out - online).abs().max() > 1e-3  # not the student's own output
        before = [p.clone() for p in target.tracked()]
        with as_unet(target) as unet:
            torch.testing.assert_close(unet(x, t, encoder_hidden_states=ctx).sample, ema_out, atol=1e-6, rtol=0)
        assert all(torch.equal(a, b) for a, b in zip(before, target.tracked(), strict=True))  # restored


def test_adapter_ema_update_follows_the_rule_on_adapters_only(make_cfg):
    models = load_run_models(make_cfg(*LORA))
    student, target = models.student, models.target
    base = {n: p.clone() for n, p in student.named_parameters() if not p.requires_grad}
    old = [p.clone() for p in target.parameters()]
    _perturb(student, 0.1, seed=1)
    new = [p.clone() for p in target.tracked()]
    ema_update(target, student, 0.9)
    for e, o, n in zip(target.parameters(), old, new, strict=True):
        torch.testing.assert_close(e, 0.9 * o + 0.1 * n, atol=1e-6, rtol=0)
    assert all(torch.equal(p, base[n]) for n, p in student.named_parameters() if not p.requires_grad)


def test_lora_ema_run_resumes_bitwise_and_exports_the_ema_adapters(make_cfg):
    from safetensors.torch import load_file

    over = (*LORA, "train.max_train_steps=4", "train.export=true", "train.checkpoint_every=2",
            "optim.learning_rate=1e-2")  # fmt: skip
    full = train(make_cfg(*over, out="full"))
    part = make_cfg(*over, out="part")
    assert train(part, stop_after=2).status == "interrupted"
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    resumed = train(part, resume="latest")
    assert resumed.losses == full.losses[2:]
    a = load_file(str(full.output_dir / "lora" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed.output_dir / "lora" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (full.output_dir / "target").exists()  # the adapters in lora/ and student/ are the target's


def test_lora_export_holds_the_ema_not_the_online_adapters(make_cfg, monkeypatch):
    """With mu = 1 the EMA never moves: lora/ must then hold the initial adapters (lora_B zero), not the trained
    ones; with mu = 0 it is the student's."""
    from safetensors.torch import load_file

    over = (*LORA[:3], "train.max_train_steps=2", "train.export=true", "optim.learning_rate=1e-2")
    frozen = train(make_cfg(*over, "train.ema_decay=1.0", out="mu1"))
    online = train(make_cfg(*over, "train.ema_decay=0", out="mu0"))
    w1 = load_file(str(frozen.output_dir / "lora" / "pytorch_lora_weights.safetensors"))
    w0 = load_file(str(online.output_dir / "lora" / "pytorch_lora_weights.safetensors"))
    b_keys = [k for k in w1 if "lora_B" in k]
    assert b_keys and all(torch.count_nonzero(w1[k]) == 0 for k in b_keys)  # peft initialises lora_B to zero
    assert any(torch.count_nonzero(w0[k]) > 0 for k in b_keys)


@pytest.mark.parametrize("omega", [False, True], ids=["fixed-omega", "omega-conditioned"])
def test_memory_plan_counts_an_adapter_copy_for_the_lora_target(make_cfg, omega):
    from lcm_distill.engine.memory import estimate

    cfg = make_cfg(*LORA, *(("model.lora.omega_conditioned=true",) if omega else ()))
    lines = {what: (gib, how) for what, gib, how in estimate(cfg).lines}
    assert "adapters" in lines["EMA target"][1]
    assert lines["EMA target"][0] == pytest.approx(lines["student: LoRA adapters"][0])


def test_lora_adapters_are_initialised_from_the_run_seed(make_cfg):
    """peft draws lora_A from the global RNG: two runs of one config in one process started from different adapters
    (equal first losses, since lora_B = 0, then apart). Now the run seed decides them."""
    over = (*LORA, "train.max_train_steps=3", "optim.learning_rate=1e-2")
    torch.manual_seed(123)
    a = train(make_cfg(*over, out="a")).losses
    b = train(make_cfg(*over, out="b")).losses
    c = train(make_cfg(*over, "train.seed=1", out="c")).losses
    assert a == b and a != c
