"""What may change when a run is resumed, checked against the config saved in the checkpoint (config.resolved.yaml).

- Refused (the resumed run would silently mean something else): the networks and how they are built (model.*
  except speed-only switches), the data and its order (data.* except data.num_workers), the objective
  (objective.*), the batch (train.per_device_batch_size, train.gradient_accumulation_steps), the seed, the target
  EMA and its schedule, the optimiser's form (optim.* except the learning rate and gradient clipping), and for a
  non-constant LR schedule its length (train.max_train_steps). The message names the keys and both values.
- Applied, with a log line: data.shards when it lists the same shards by name and size (a moved copy;
  engine/preflight.py compares it with what the checkpoint recorded), optim.learning_rate (the restored LR
  schedule is rescaled to it), optim.max_grad_norm, train.max_train_steps (constant schedules), and everything
  about logging, checkpoints, validation and export.
- The process count is checked by the data position (engine state) when the checkpoint is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from ..config import Config, ConfigError
from .checkpoint import CONFIG_FILE, RunLayout

logger = logging.getLogger(__name__)

SPEED_ONLY = {"model.attention", "model.compile", "model.compile_backend", "model.gradient_checkpointing",
              "data.num_workers", "train.ema_impl", "optim.adamw_impl"}  # fmt: skip
REFUSED_PREFIXES = ("model.", "data.", "objective.", "optim.")
REFUSED_KEYS = {
    "train.per_device_batch_size",
    "train.gradient_accumulation_steps",
    "train.seed",
    "train.ema_decay",
    "train.ema_schedule",
}
APPLIED = {"optim.learning_rate", "optim.max_grad_norm"}
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def saved_config(checkpoint: Path, layout: RunLayout) -> dict | None:
    """The config a checkpoint was written with (its own copy; for pre-0.2 checkpoints the run folder's)."""
    for path in (checkpoint / CONFIG_FILE, layout.config):
        if path.is_file():
            return yaml.safe_load(path.read_text())
    return None


def resume_changes(cfg: Config, checkpoint: Path, layout: RunLayout,
                   shards_checked: bool = False) -> tuple[float, float] | None:  # fmt: skip
    """Refuse meaning-changing edits (ConfigError naming each key); return (saved, new) learning rate if it changed.

    ``shards_checked``: the shard list was compared by identity (engine/preflight.py), so a new data.shards (the
    same shards moved) is applied rather than refused."""
    saved = saved_config(checkpoint, layout)
    if saved is None:
        logger.warning("%s has no %s: cannot check that the resumed settings match the saved run", checkpoint,
                       CONFIG_FILE)  # fmt: skip
        return None
    old, new = _flat(saved), _flat(cfg.to_dict())
    changed = {k for k in new if k in old and old[k] != new[k]}
    constant = new.get("optim.lr_scheduler") in CONSTANT_SCHEDULES
    refused = sorted(
        k for k in changed
        if k not in SPEED_ONLY and k not in APPLIED and not (shards_checked and k == "data.shards")
        and (k.startswith(REFUSED_PREFIXES) or k in REFUSED_KEYS or (k == "train.max_train_steps" and not constant))
    )  # fmt: skip
    if refused:
        listing = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in refused)
        raise ConfigError(
            f"--resume {checkpoint}: these settings differ from the run being resumed and would change what it "
            f"trains ({listing}). Set them back, or start a new run in another train.output_dir."
        )
    for k in sorted(changed - {"optim.learning_rate"}):
        logger.info("resume: %s changed %r -> %r (applied)", k, old[k], new[k])
    if "optim.learning_rate" in changed:
        return float(old["optim.learning_rate"]), float(new["optim.learning_rate"])
    return None


def apply_learning_rate(optimizer, lr_schedule, saved: float, new: float) -> None:
    """Rescale a restored optimiser and LR schedule from learning rate ``saved`` to ``new`` (same schedule shape)."""
    ratio = new / saved
    lr_schedule.base_lrs = [b * ratio for b in lr_schedule.base_lrs]
    for group in optimizer.param_groups:
        group["lr"] *= ratio
        if "initial_lr" in group:
            group["initial_lr"] *= ratio
    lr_schedule._last_lr = [g["lr"] for g in optimizer.param_groups]
    logger.warning("resume: optim.learning_rate %g -> %g applied (current LR %g)", saved, new,
                   optimizer.param_groups[0]["lr"])  # fmt: skip
