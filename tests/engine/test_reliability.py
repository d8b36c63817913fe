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




@pytest.mark.parametrize(
    "failure",
    [OSError(28, "No space left on device"), RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")],
)
def test_a_full_disk_during_a_checkpoint_names_the_space_and_keeps_the_last_one(make_cfg, monkeypatch, failure):
    from accelerate import Accelerator

    real, calls = Accelerator.save_state, []

    def save_state(self, output_dir=None, **kw):
        calls.append(output_dir)
        if len(calls) == 2:  # the second checkpoint: half written, then the disk is full
            from pathlib import Path

            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 1000)
            raise failure
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    cfg = make_cfg("train.max_train_steps=3", "train.checkpoint_every=1")
    with pytest.raises(CheckpointError, match=r"no space left.*GiB are free.*checkpoints_keep \+ 1") as err:
        train(cfg)
    assert "checkpoint-00000001" in str(err.value)  # the last complete one is named
    ckpts = cfg.train.output_dir + "/checkpoints"
    assert [p.name for p in list_checkpoints(cfg.train.output_dir)] == ["checkpoint-00000001"]
    assert not list(__import__("pathlib").Path(ckpts).glob(".tmp-*"))  # the partial folder gave its space back
    monkeypatch.setattr(Accelerator, "save_state", real)
    assert train(cfg, resume="latest").step == 3


def test_an_unreadable_dataset_is_a_data_error_not_a_learning_rate_problem(make_cfg, tmp_path):
    from lcm_distill.engine import DataError
    from lcm_distill.testing import make_imagefolder

    broken = make_imagefolder(tmp_path / "broken", n=0, corrupt=4)
    cfg = make_cfg(f"data.dataset={broken}", "train.max_nonfinite_steps=3")
    with pytest.raises(DataError, match="no readable sample") as err:
        train(cfg)
    assert "learning_rate" not in str(err.value)


def test_divergence_never_names_a_checkpoint_with_exploded_weights(make_cfg):
    from lcm_distill.engine import NonFiniteLossError

    cfg = make_cfg("train.max_train_steps=50", "train.checkpoint_every=1", "optim.learning_rate=1e6",
                   "optim.max_grad_norm=1e9", "train.max_nonfinite_steps=2")  # fmt: skip
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg)
    msg = str(err.value)
    assert "diverged weights" in msg and "last good checkpoint: none" in msg, msg


def test_missing_captions_are_trained_as_empty_and_counted(tmp_path):
    import json

    from lcm_distill.config import load_config
    from lcm_distill.data import build_batches
    from lcm_distill.testing import make_imagefolder

    data = make_imagefolder(tmp_path / "d", n=4)
    rows = [json.loads(r) for r in (data / "metadata.jsonl").read_text().splitlines()]
    rows[1]["text"], rows[2]["text"] = "", None
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, ["model.teacher=t", f"data.dataset={data}", "data.resolution=16"])
    batches = build_batches(cfg.data, 4, 0, 1, 0)
    batch = next(iter(batches))
    assert sorted(batch["captions"]).count("") == 2 and batches.position.missing_captions == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.teacher={empty}", r"model\.teacher=.* is not a diffusers pipeline folder"),
        ("model.teacher=stabilityai/stable-diffusion-2-1", r"model\.teacher=stabilityai.*offline"),
        ("data.dataset=lambdalabs/pokemon-blip-captions", r"data\.dataset=lambdalabs.*offline"),
        ("data.dataset={empty}", r"data\.dataset=.*holds no images"),
        ("train.output_dir={file}/run", r"train\.output_dir=.*cannot create it"),
    ],
)
def test_bad_paths_are_config_errors_naming_the_key(make_cfg, tmp_path, monkeypatch, override, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cfg = make_cfg(override.format(empty=tmp_path / "empty", file=tmp_path / "file"))
    with pytest.raises(ConfigError, match=message):
        train(cfg)


@pytest.mark.parametrize(
    ("override", "env", "message"),
    [
        ("data.dataset={readme}", {}, r"data\.dataset=.*README\.md: a dataset file must be \.parquet"),
        ("train.per_device_batch_size=32", {}, r"train\.per_device_batch_size=32 x 1 process.*\(16 images"),
        ("train.per_device_batch_size=8", {"WORLD_SIZE": "3"}, r"per_device_batch_size=8 x 3 process.*\(16 images"),
        ("data.max_samples=1", {}, r"\(1 images with data\.max_samples"),
        ("data.dataset={parquet}", {}, r"\(1 rows"),
        ("train.mixed_precision=fp16", {"ACCELERATE_USE_CPU": "1"}, r"train\.mixed_precision=fp16 on a CPU run"),
        ("train.push_to_hub=true", {"TRANSFORMERS_OFFLINE": "1"}, r"train\.push_to_hub=true .*offline.*hf upload"),
        ("train.push_to_hub=true", {"HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}, r"no Hugging Face token"),
    ],
)
def test_late_failures_are_preflight_errors_before_models_load(make_cfg, tmp_path, monkeypatch, override, env,
                                                              message):
    """Each failed only after ~9 s of model loading (raw tracebacks), after the whole run (push offline) or not at
    all (fp16 on CPU); now the preflight - which loads no model - names the key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lcm_distill.engine.preflight import preflight

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "README.md").write_text("# not data\n")
    pq.write_table(pa.table({"image": [b"x"], "text": ["a"]}), tmp_path / "one.parquet")
    extra = ("train.hub_model_id=me/lcm",) if "push" in override else ()
    size = () if "batch_size" in override else ("train.per_device_batch_size=2",)
    cfg = make_cfg(override.format(readme=tmp_path / "README.md", parquet=tmp_path / "one.parquet"), *extra, *size)
    with pytest.raises(ConfigError, match=message):
        preflight(cfg, dry_run=True)
    monkeypatch.undo()
