"""Every check that can run before a model is loaded, so a run never trains for an hour and then fails on a setting
that was wrong from the start. ``train()`` runs it first; ``--dry-run`` runs it too (without touching the disk).

Checks (each error is a ConfigError naming the key or file and what to do):
- model.teacher / model.student / model.vae: a local folder exists and is a diffusers model; a hub id is readable
  (offline: say so); the skipping grid divides the model's own T; data.resolution is a multiple of the VAE factor.
- data.*: the local dataset / imagefolder / parquet / shards exist, hold images, and have the named columns; a hub
  dataset while offline is refused with a hint; data.cache_dir exists.
- train.output_dir: writable; a folder that already holds checkpoints is refused for a new run unless ``--resume``
  (continue it) or ``--overwrite`` (delete its checkpoints) is given.
- ``--resume``: the newest *complete and intact* checkpoint is chosen (manifest sizes and hashes; an older one
  when the newest is damaged, with a log line); settings that change the run's meaning are refused, the learning
  rate is applied (engine/resume.py); data.shards may point elsewhere when it lists the same shards (names, sizes)
  as the checkpoint recorded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, ConfigError
from ..conventions import num_train_timesteps
from ..hub import HubUnavailable, dataset_location, is_local_path, model_location
from ..source_kinds import DATASET_FILE_SUFFIXES, SOURCE_KINDS
from .checkpoint import RunLayout, find_resume_checkpoint, list_checkpoints, read_manifest
from .engine_choice import EngineChoice, resolve_engine
from .resume import resume_changes

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Plan:
    """What the checks found: the model's scheduler config, the checkpoint to resume from and what changes on it."""

    scheduler_config: dict
    checkpoint: Path | None = None
    learning_rate_change: tuple[float, float] | None = None  # (saved, new) applied on resume
    notes: list[str] = field(default_factory=list)
    engine: EngineChoice | None = None  # train.distributed resolved against the launcher (engine/parallel.py)


def _read_json(path: Path, key: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{key}: {path} is not readable JSON ({err}).") from err


def check_model_folder(key: str, source: str, revision: str | None, parts: tuple[str, ...]) -> dict:
    """The scheduler config of the diffusers pipeline ``source`` (``key`` names it in errors)."""
    from ..models import read_scheduler_config

    try:
        location = model_location(source, revision)  # offline: the hub id's cached snapshot folder
    except HubUnavailable as err:
        raise ConfigError(f"{key}={source}: {err}") from err
    path = Path(location).expanduser()
    if is_local_path(location):
        if not path.is_dir():
            raise ConfigError(f"{key}={source}: no such folder. Give a diffusers pipeline folder (model_index.json, "
                              "unet/, vae/, ...) or a Hub id such as stabilityai/stable-diffusion-2-1.")  # fmt: skip
        missing = [p for p in parts if not (path / p).is_dir()]
        if missing or not (path / "scheduler" / "scheduler_config.json").is_file():
            raise ConfigError(
                f"{key}={source} is not a diffusers pipeline folder: it lacks {missing or ['scheduler/']} "
                f"(found {sorted(p.name for p in path.iterdir())[:8]}). Save one with pipe.save_pretrained(folder)."
            )
        return _read_json(path / "scheduler" / "scheduler_config.json", key)
    try:
        return read_scheduler_config(source, revision)
    except Exception as err:  # hub errors come in many types (gated, missing, no network)
        raise ConfigError(f"{key}={source}: not a local folder, and the Hub model could not be read "
                          f"({type(err).__name__}: {err}); check the id, your token and network, or download it "
                          f"(hf download {source}) and set {key} to the folder.") from err  # fmt: skip


def _vae_factor(cfg: Config, source: str) -> int | None:
    """2^(levels - 1) of the run's VAE when its config is a local file (else None: checked after loading)."""
    config = Path(cfg.model.vae) / "config.json" if cfg.model.vae else Path(source) / "vae" / "config.json"
    if not config.is_file():
        return None
    return 2 ** (len(_read_json(config, "model.vae").get("block_out_channels", [0, 0, 0, 0])) - 1)


def check_resolution(resolution: int, factor: int | None) -> None:
    if factor and resolution % factor:
        lo = resolution // factor * factor
        raise ConfigError(f"data.resolution={resolution} is not a multiple of the VAE's downsampling factor {factor}; "
                          f"use {lo or factor} or {lo + factor}.")  # fmt: skip


def check_models(cfg: Config, needs_teacher: bool) -> dict:
    from ..functional import SkippingGrid
    from ..model_card import dropped_components_note
    from ..models import components_not_exported

    m = cfg.model
    key, source = ("model.teacher", m.teacher) if needs_teacher or not m.student else ("model.student", m.student)
    sched = check_model_folder(key, source, m.revision, ("unet", "vae", "text_encoder", "tokenizer"))
    if m.vae and is_local_path(m.vae) and not (Path(m.vae) / "config.json").is_file():
        raise ConfigError(f"model.vae={m.vae}: no config.json there; give an AutoencoderKL folder or a Hub id.")
    try:
        SkippingGrid(num_train_timesteps(sched), cfg.objective.num_points)
    except ValueError as err:
        raise ConfigError(f"objective.num_points: {err} (scheduler config of {source})") from err
    check_resolution(cfg.data.resolution, _vae_factor(cfg, source))
    check_family(key, source, m.revision, m.frozen_dtype, m.vae)
    dropped = components_not_exported(model_location(source, m.revision), m.revision)
    if dropped:
        logger.warning("%s: %s", key, dropped_components_note(source, dropped))
    trained_n = sched.get("original_inference_steps") if source == m.student else None
    if trained_n and trained_n != cfg.objective.num_points:
        logger.warning(
            "model.student was trained on a grid of N=%s points but objective.num_points=%s; inference timesteps "
            "will follow the new grid. Set objective.num_points=%s to keep the original one.",
            trained_n, cfg.objective.num_points, trained_n,
        )  # fmt: skip
    return sched


def check_family(key: str, source: str, revision: str | None, frozen_dtype: str = "fp32",
                 vae: str | None = None) -> None:  # fmt: skip
    """Say which model family the run trains (lcm_distill/families.py reads it from the folder's configs) and refuse,
    before any weight is loaded, what the family cannot run: a folder without the family's extra components, SDXL's
    own VAE in fp16 (it overflows to NaN latents)."""
    from ..models import read_family

    try:
        family = read_family(model_location(source, revision), revision)
    except Exception as err:  # no readable unet/config.json: the model check above already vouched for the folder
        logger.warning("%s=%s: could not read unet/config.json to tell the model family (%s)", key, source, err)
        return
    if family.extra_components:
        check_model_folder(key, source, revision, family.extra_components)
    if family.fp16_vae_overflows and frozen_dtype == "fp16" and not vae:
        raise ConfigError(f"model.frozen_dtype=fp16 with {key}={source}: the {family.label} VAE overflows in fp16 (NaN "
                          "latents). Use model.frozen_dtype=bf16 or fp32, or set model.vae to an fp16-safe VAE "
                          "(e.g. madebyollin/sdxl-vae-fp16-fix).")  # fmt: skip
    logger.info("%s: %s model (read from its unet/config.json)", key, family.label)


def _columns_of(path: Path) -> tuple[list[str] | None, int | None, str]:
    """(columns, rows, what a row is) of a local dataset without loading it (a few file reads); None where unknown."""
    if path.is_dir():
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            import pyarrow.parquet as pq

            return list(pq.read_schema(parquet[0]).names), sum(pq.read_metadata(p).num_rows for p in parquet), "rows"
        images = sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        meta = next(iter(sorted(path.rglob("metadata.jsonl"))), None)
        columns = ["image"]
        if meta is not None:
            first = meta.read_text().split("\n", 1)[0]
            columns += [c for c in json.loads(first) if c != "file_name"] if first.strip() else []
        return columns, images, "images"
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names), pq.read_metadata(path).num_rows, "rows"
    if path.suffix not in (".jsonl", ".csv"):
        return None, None, "rows"  # .json: one array or object, not read here
    first, count = None, 0
    with open(path, encoding="utf-8") as f:  # streamed: a caption file can be millions of lines
        for line in f:
            if line.strip():
                first, count = first or line, count + 1
    if path.suffix == ".jsonl":
        return (list(json.loads(first)) if first else None), count, "rows"
    return (first.strip().split(",") if first else None), max(count - 1, 0), "rows"


def check_data(cfg: Config) -> None:
    d = cfg.data
    if d.cache_dir:
        if not (Path(d.cache_dir) / "manifest.json").is_file():
            raise ConfigError(f"data.cache_dir={d.cache_dir}: no finished cache there (no manifest.json); build it "
                              "with lcm-distill-cache --config FILE --out DIR.")  # fmt: skip
        return
    if SOURCE_KINDS[d.source].location_key == "shards":  # a shard list (brace patterns, globs, folders)
        from ..data.webdataset import expand_shards

        try:
            expand_shards(d.shards)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(str(err)) from err
        return
    path = Path(d.dataset).expanduser()
    if not is_local_path(d.dataset):
        try:
            dataset_location(d.dataset, d.config_name)  # offline: the Hub cache or datasets' prepared cache
        except HubUnavailable as err:
            raise ConfigError(f"data.dataset={d.dataset}: {err}") from err
        return
    if not path.exists():
        raise ConfigError(f"data.dataset={d.dataset}: no such file or folder; give an imagefolder (images + "
                          "metadata.jsonl with captions), a parquet/csv/json file, or a Hub dataset id.")  # fmt: skip
    if path.is_file() and path.suffix not in DATASET_FILE_SUFFIXES:
        raise ConfigError(f"data.dataset={d.dataset}: a dataset file must be {', '.join(DATASET_FILE_SUFFIXES)}; "
                          "give one of those, an imagefolder (images + metadata.jsonl) or a Hub id.")  # fmt: skip
    columns, rows, what = _columns_of(path)
    if rows == 0:
        kinds = f"images ({', '.join(sorted(IMAGE_SUFFIXES))})" if what == "images" else "rows"
        raise ConfigError(f"data.dataset={d.dataset}: the {'folder' if path.is_dir() else 'file'} holds no {kinds}.")
    if columns is not None:
        for key, col in (("data.image_column", d.image_column), ("data.caption_column", d.caption_column)):
            if col not in columns:
                raise ConfigError(f"{key}={col!r} is not a column of {d.dataset}; its columns are {columns}.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    usable = min(rows, d.max_samples) if rows is not None and d.max_samples else rows
    batch = cfg.train.per_device_batch_size
    if not SOURCE_KINDS[d.source].streamed and usable is not None and usable < batch * world:
        raise ConfigError(
            f"train.per_device_batch_size={batch} x {world} process(es) is more than data.dataset={d.dataset} "
            f"holds ({usable} {what}{' with data.max_samples' if d.max_samples else ''}, before filters); lower "
            "train.per_device_batch_size or add data."
        )


def check_quality(cfg: Config) -> None:
    """The quality signal's reference imagefolder and feature network are there (engine/quality.py)."""
    t = cfg.train
    if not t.quality_every:
        return
    from ..evaluation.imagefolder import imagefolder_rows

    try:
        _, rows = imagefolder_rows(t.quality_reference, "test")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"train.quality_reference={t.quality_reference}: {err}") from err
    if len(rows) < 2:
        raise ConfigError(f"train.quality_reference={t.quality_reference}: FID needs at least 2 images.")
    from ..paths import TESTBED_DIR, is_testbed_reference

    if t.quality_features == "testbed" or (t.quality_features == "auto" and is_testbed_reference(t.quality_reference)):
        if not (Path(TESTBED_DIR) / "classifier" / "model.safetensors").is_file():
            raise ConfigError(f"train.quality_features=testbed: no classifier in {TESTBED_DIR}; use "
                              "train.quality_features=inception.")  # fmt: skip
    else:
        from ..evaluation.features import inception_weights_path

        try:
            inception_weights_path()
        except (FileNotFoundError, ModuleNotFoundError) as err:
            raise ConfigError(f"train.quality_features=inception: {err}") from err


def check_precision(cfg: Config, env: dict | None = None) -> None:
    """fp16 autocast needs an accelerator: on CPU accelerate would run the step in fp32 (or fail) without saying."""
    env = os.environ if env is None else env
    if cfg.train.mixed_precision != "fp16":
        return
    import torch

    cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not (
        torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    )
    if cpu:
        raise ConfigError("train.mixed_precision=fp16 on a CPU run: fp16 autocast and loss scaling need a GPU; use "
                          "train.mixed_precision=bf16 (CPU autocast) or no.")  # fmt: skip


def check_push(cfg: Config) -> None:
    """train.push_to_hub happens after the last step: an upload that cannot happen is said before the first one."""
    if not cfg.train.push_to_hub:
        return
    from ..hub import offline, offline_note

    if offline():
        raise ConfigError(f"train.push_to_hub=true (to {cfg.train.hub_model_id}) but {offline_note()}; unset it, "
                          "or set train.push_to_hub=false and upload the exported folder later (hf upload).")
    from huggingface_hub import get_token

    if get_token() is None:
        raise ConfigError(f"train.push_to_hub=true (to {cfg.train.hub_model_id}) but no Hugging Face token is set; "
                          "log in (hf auth login) or set HF_TOKEN, or set train.push_to_hub=false.")  # fmt: skip


def check_output_dir(out: Path, create: bool) -> None:
    """train.output_dir can be written (``create``: make it; else check the nearest existing parent)."""
    probe = out
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"train.output_dir={out}: cannot create it ({err}); choose a writable folder.") from err
    else:
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as err:
        msg = f"train.output_dir={out}: cannot write in {probe} ({err}); choose a writable folder."
        raise ConfigError(msg) from err


def preflight(cfg: Config, resume: str | None = None, overwrite: bool = False, dry_run: bool = False) -> Plan:
    """Run every up-front check; see the module docstring. ``dry_run``: check only, change nothing on disk."""
    from ..objective_kinds import OBJECTIVE_KINDS

    main = int(os.environ.get("RANK", "0")) == 0
    layout = RunLayout(cfg.train.output_dir)
    check_output_dir(layout.root, create=not dry_run and main)
    engine = resolve_engine(cfg)  # DDP / FSDP2 / ZeRO-2 settings and launcher fields, before anything else
    plan = Plan(check_models(cfg, OBJECTIVE_KINDS[cfg.objective.kind].needs_teacher), engine=engine)
    check_data(cfg)
    check_precision(cfg)
    check_push(cfg)
    check_quality(cfg)
    existing = list_checkpoints(layout.root)
    if resume is None and existing:
        if not overwrite:
            raise ConfigError(
                f"train.output_dir={layout.root} already holds {len(existing)} checkpoint(s) of a run (newest: "
                f"{existing[-1].name}). Continue it with --resume latest, delete them with --overwrite, or set "
                "train.output_dir to a new folder."
            )
        plan.notes.append(f"--overwrite: deleting {len(existing)} checkpoint(s) in {layout.checkpoints}")
        if not dry_run and main:
            logger.warning(plan.notes[-1])
            shutil.rmtree(layout.checkpoints, ignore_errors=True)
    if resume is not None:
        plan.checkpoint = find_resume_checkpoint(layout.root, resume)
        if plan.checkpoint is None:
            plan.notes.append(f"--resume {resume}: no checkpoint in {layout.checkpoints} yet; starting at step 0")
            logger.warning(plan.notes[-1])
        else:
            moved = check_resumed_shards(cfg, plan.checkpoint)
            plan.learning_rate_change = resume_changes(cfg, plan.checkpoint, layout, shards_checked=moved)
    return plan


def check_resumed_shards(cfg: Config, checkpoint: Path) -> bool:
    """Compare the shard list with the one ``checkpoint`` recorded (names in order, local sizes): a moved copy of the
    same shards resumes, a different set is refused here, before models load. False when nothing was recorded
    (checkpoints before 0.2.0 - then data.shards must be unchanged, engine/resume.py)."""
    if cfg.data.cache_dir or SOURCE_KINDS[cfg.data.source].location_key != "shards":
        return False
    saved = read_manifest(checkpoint).get("data_shards")
    if not saved:
        return False
    from ..data.webdataset import expand_shards, identity_difference, shard_identity

    difference = identity_difference(saved, shard_identity(expand_shards(cfg.data.shards)))
    if difference:
        raise ConfigError(f"--resume {checkpoint}: data.shards={cfg.data.shards!r} is not the shard set the run was "
                          f"trained on ({difference}). Point data.shards at the same shards (a moved copy is fine: "
                          "same file names and sizes), or start a new run.")  # fmt: skip
    return True
