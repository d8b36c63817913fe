"""Latency split: hooks count the right calls, parts add up to no more than the total, hooks are removed."""

from __future__ import annotations

from lcm_distill.evaluation import LatencyMeter, configure_scheduler, generate

PROMPTS = ["a red digit 1", "a blue digit 2", "a green digit 3"]


def test_latency_split_sums_and_counts(tiny_pipe):
    configure_scheduler(tiny_pipe, "teacher-ddim")
    meter = LatencyMeter("cpu")
    with meter.attach(tiny_pipe):
        generate(tiny_pipe, PROMPTS, 3, 4.0, batch_size=2, meter=meter)
    split = meter.split()
    batches = 2
    assert split.calls["unet"] == 3 * batches  # CFG runs cond+uncond in one batched UNet call per step
    assert split.calls["vae_decode"] == batches
    assert split.calls["text_encoder"] == 2 * batches  # prompt and negative ("") prompt
    parts = split.text_encoder_s + split.unet_s + split.vae_decode_s
    assert split.unet_s > 0 and split.text_encoder_s > 0 and split.vae_decode_s > 0
    assert parts <= split.total_s * 1.01 + 1e-4
    assert abs(parts + split.other_s - split.total_s) < 1e-6
    assert meter.images == 3


def test_hooks_are_removed(tiny_pipe):
    meter = LatencyMeter()
    with meter.attach(tiny_pipe):
        assert "decode" in vars(tiny_pipe.vae)
    assert "decode" not in vars(tiny_pipe.vae)
    assert not tiny_pipe.unet._forward_hooks and not tiny_pipe.unet._forward_pre_hooks
    assert not tiny_pipe.text_encoder._forward_hooks
    generate(tiny_pipe, PROMPTS[:1], 1, 1.0)
    assert meter.calls["unet"] == 0  # nothing recorded outside the block


def test_no_cfg_means_one_text_encoder_call(tiny_pipe):
    configure_scheduler(tiny_pipe, "teacher-ddim")
    meter = LatencyMeter()
    with meter.attach(tiny_pipe):
        generate(tiny_pipe, PROMPTS[:2], 2, 1.0, batch_size=2, meter=meter)
    assert meter.calls["text_encoder"] == 1 and meter.calls["unet"] == 2
