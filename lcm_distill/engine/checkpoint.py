"""Checkpoints that never lose work: written under a temporary name, renamed when complete, last K kept.

Layout (:class:`RunLayout`): ``<output_dir>/checkpoints/checkpoint-<step:08d>/`` holding accelerate's state
(student, optimiser, RNG states per process, registered objects: LR schedule, target network, engine state with the
data position) and the run's ``config.resolved.yaml``.
A crash mid-write leaves only a ``.tmp-*`` folder, which resume ignores and the next save removes.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
CONFIG_FILE = "config.resolved.yaml"  # the resolved config: in the run folder, every checkpoint and every export


@dataclass(frozen=True)
class RunLayout:
    """Where a run keeps what it writes; the one place the layout of ``train.output_dir`` is known.

    ``config.resolved.yaml``, ``checkpoints/checkpoint-<step:08d>/`` (each with its own config.resolved.yaml),
    ``validation/step-<step:08d>-<net>.png``, ``logs/`` (tensorboard), and at the end the exported pipeline folders
    ``student/``, ``target/`` and, for LoRA runs, ``lora/``.
    """

    root: Path

    def __init__(self, output_dir: str | Path) -> None:
        object.__setattr__(self, "root", Path(output_dir))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"checkpoint-{step:08d}"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    def validation_image(self, step: int, net: str) -> Path:
        return self.validation / f"step-{step:08d}-{net}.png"

    def export(self, net: str) -> Path:
        """The exported folder of ``net``: "student", "target" (diffusers pipelines) or "lora" (adapter weights)."""
        if net not in ("student", "target", "lora"):
            raise ValueError(f"no exported folder named {net!r}; use student, target or lora.")
        return self.root / net


def checkpoint_dir(output_dir: str | Path) -> Path:
    return RunLayout(output_dir).checkpoints


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """Where the complete checkpoint of ``step`` lives (what ``--resume`` and outside tools look for)."""
    return RunLayout(output_dir).checkpoint(step)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CKPT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """``latest`` -> newest complete checkpoint (None if there is none); a path must exist."""
    if resume is None:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder; use 'latest' or a checkpoint-* path.")
    return path


def save_checkpoint(accelerator, output_dir: str | Path, step: int, keep: int, config_yaml: str | None = None) -> Path:
    """Collective: every process calls it. Returns the final path. ``config_yaml`` (the resolved config) is written
    into the checkpoint, so a checkpoint copied elsewhere still says what it was trained with."""
    root = checkpoint_dir(output_dir)
    final = checkpoint_path(output_dir, step)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if config_yaml is not None:
            (tmp / CONFIG_FILE).write_text(config_yaml)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
