"""Checkpoints that never lose work: written under a temporary name, renamed when complete, last K kept.

Layout: ``<output_dir>/checkpoints/checkpoint-<step:08d>/`` holding accelerate's state (student, optimiser, RNG
states per process, registered objects: LR schedule, target network, engine state with the data position).
A crash mid-write leaves only a ``.tmp-*`` folder, which resume ignores and the next save removes.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """Where the complete checkpoint of ``step`` lives (what ``--resume`` and outside tools look for)."""
    return checkpoint_dir(output_dir) / f"checkpoint-{step:08d}"


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


def save_checkpoint(accelerator, output_dir: str | Path, step: int, keep: int) -> Path:
    """Collective: every process calls it. Returns the final path."""
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
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
