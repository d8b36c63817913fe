"""Never lose a run: a used output folder is refused, damaged checkpoints are skipped on resume, settings that
change a run's meaning are refused on resume while the learning rate is applied, and bad inputs are config errors
found before any model is loaded."""

from __future__ import annotations

import pytest

from lcm_distill.config import ConfigError
from lcm_distill.engine import CheckpointError, find_resume_checkpoint, list_checkpoints, train, verify_checkpoint


def _two_checkpoints(make_cfg):
    cfg = make_cfg("train.max_train_steps=2", "train.checkpoint_every=1")
    train(cfg)
    return cfg, list_checkpoints(cfg.train.output_dir)


def test_a_new_run_refuses_a_used_folder_unless_resumed_or_overwritten(make_cfg):
    cfg, ckpts = _two_checkpoints(make_cfg)
    assert len(ckpts) == 2
    with pytest.raises(ConfigError, match=r"train\.output_dir=.*--resume latest.*--overwrite"):
        train(cfg)
    assert list_checkpoints(cfg.train.output_dir) == ckpts  # nothing deleted
    again = train(cfg, overwrite=True)
    assert again.step == 2 and [p.name for p in list_checkpoints(cfg.train.output_dir)] == [p.name for p in ckpts]


@pytest.mark.parametrize("damage", ["truncate", "zero", "flip", "delete_optimizer", "delete_rng", "empty"])
def test_resume_latest_skips_a_damaged_newest_checkpoint(make_cfg, damage):
    cfg, (older, newest) = _two_checkpoints(make_cfg)
    model = newest / "model.safetensors"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "zero":
        model.write_bytes(b"\0" * model.stat().st_size)
    elif damage == "flip":
        blob = bytearray(model.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        model.write_bytes(bytes(blob))
    elif damage == "delete_optimizer":
        (newest / "optimizer.bin").unlink()
    elif damage == "delete_rng":
        (newest / "random_states_0.pkl").unlink()
    else:
        for f in newest.iterdir():
            f.unlink()
    assert verify_checkpoint(newest) is not None and verify_checkpoint(older) is None
    assert find_resume_checkpoint(cfg.train.output_dir, "latest") == older
    with pytest.raises(CheckpointError, match="damaged"):
        find_resume_checkpoint(cfg.train.output_dir, str(newest))


def test_every_checkpoint_damaged_is_an_error_naming_them(make_cfg):
    cfg, ckpts = _two_checkpoints(make_cfg)
    for c in ckpts:
        (c / "optimizer.bin").unlink()
    with pytest.raises(CheckpointError, match="every checkpoint"):
        find_resume_checkpoint(cfg.train.output_dir, "latest")


def test_resume_refuses_a_changed_batch_and_applies_a_new_learning_rate(make_cfg, caplog):
    cfg = make_cfg("train.max_train_steps=1")
    train(cfg)
    bigger = make_cfg("train.max_train_steps=2", "train.per_device_batch_size=4")
    with pytest.raises(ConfigError, match=r"train\.per_device_batch_size: 2 -> 4"):
        train(bigger, resume="latest")
    lower = make_cfg("train.max_train_steps=2", "optim.learning_rate=1e-4")
    with caplog.at_level("WARNING"):
        assert train(lower, resume="latest").step == 2
    assert "optim.learning_rate 0.001 -> 0.0001 applied" in caplog.text


def test_resume_latest_without_a_checkpoint_says_so(make_cfg, caplog):
    with caplog.at_level("WARNING"):
        assert train(make_cfg("train.max_train_steps=1"), resume="latest").step == 1
    assert "no checkpoint" in caplog.text


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.resolution=17", r"data\.resolution=17"),
        ("data.caption_column=caption", r"data\.caption_column='caption'"),
        ("model.lora.enabled=true", None),
    ],
)
def test_bad_inputs_fail_before_training(make_cfg, override, key):
    if key is None:  # LoRA with a target module name the UNet does not have
        cfg = make_cfg(override, "train.ema_decay=0", "model.lora.target_modules=[no_such_module]")
        key = r"model\.lora\.target_modules"
    else:
        cfg = make_cfg(override)
    with pytest.raises(ConfigError, match=key):
        train(cfg)


def test_config_errors_for_ranges_and_schedules():
    from lcm_distill.config import load_config

    ok = ["model.teacher=t", "data.dataset=d"]
    for bad, key in [("objective.omega_min=-1", "omega_min"), ("objective.omega_max=500", "omega_max"),
                     ("train.validation_guidance_scale=0.5", "validation_guidance_scale"),
                     ("train.validation_steps=[100]", "validation_steps"),
                     ("optim.lr_scheduler=cosin", "lr_scheduler")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            load_config(None, [*ok, bad])
    with pytest.raises(ConfigError, match="constant_with_warmup"):
        load_config(None, [*ok, "optim.lr_scheduler=constant", "optim.lr_warmup_steps=5"])
    assert load_config(None, [*ok, "optim.lr_warmup_steps=5"]).optim.lr_scheduler == "constant_with_warmup"


def test_lr_scheduler_choices_are_diffusers_schedulers():
    from diffusers.optimization import SchedulerType

    from lcm_distill.config import CHOICES

    assert set(CHOICES["optim.lr_scheduler"]) == {s.value for s in SchedulerType}
