"""Checkpoints that never lose work: written under a temporary name, renamed when complete, last K kept.

Layout (:class:`RunLayout`): ``<output_dir>/checkpoints/checkpoint-<step:08d>/`` holding accelerate's state
(student, optimiser, RNG states per process, registered objects: LR schedule, target network, engine state with the
data position) and the run's ``config.resolved.yaml``.
A crash mid-write leaves only a ``.tmp-*`` folder, which resume ignores and the next save removes. Each checkpoint
carries ``manifest.json`` (size and sha256 of every file, written last, after an fsync); ``--resume latest`` uses
the newest checkpoint that matches its manifest and skips damaged ones with a warning.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .faults import fault_point

logger = logging.getLogger(__name__)

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


MANIFEST_FILE = "manifest.json"  # sizes and sha256 of every file, written last (a checkpoint without it is incomplete)
REQUIRED = ("model.safetensors", "optimizer.bin", "random_states_0.pkl")  # accelerate's files every checkpoint has


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the path and what to do."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, extra: dict | None = None) -> dict:
    """Hash and fsync every file of ``folder``, then write manifest.json (fsynced) - the mark of a complete one."""
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        _fsync(f)
        files[str(f.relative_to(folder))] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    manifest = {"format": 1, "files": files, **(extra or {})}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    _fsync(folder / MANIFEST_FILE)
    _fsync(folder)
    return manifest


def verify_checkpoint(folder: Path) -> str | None:
    """None when ``folder`` is complete and intact, else what is wrong (missing/truncated/changed file)."""
    if not folder.is_dir():
        return "not a folder"
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():  # written before manifests existed (0.1): only check that the files are there
        missing = [f for f in REQUIRED if not (folder / f).is_file() or (folder / f).stat().st_size == 0]
        return f"no {MANIFEST_FILE} and missing or empty {missing}" if missing else None
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return f"{MANIFEST_FILE} is not readable"
    for name, want in manifest["files"].items():
        f = folder / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["size"]:
            return f"{name} has {f.stat().st_size} bytes, {want['size']} were written (truncated?)"
        if _sha256(f) != want["sha256"]:
            return f"{name} does not match its sha256 (corrupted on disk)"
    return None


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def find_resume_checkpoint(output_dir: str | Path, resume: str | None) -> Path | None:
    """``latest``: the newest complete, intact checkpoint (a damaged newer one is skipped with a warning; None when
    there is none); a path: that checkpoint, which must be intact. Raises CheckpointError naming what is wrong."""
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume}: no such checkpoint folder; use 'latest' or a checkpoint-* path.")
        if (problem := verify_checkpoint(path)) is not None:
            raise CheckpointError(f"--resume {resume}: the checkpoint is damaged ({problem}); resume from an older "
                                  "one (--resume PATH) or with --resume latest, which skips damaged ones.")  # fmt: skip
        return path
    candidates = list_checkpoints(output_dir)
    skipped = []
    for ckpt in reversed(candidates):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            for bad, why in skipped:
                logger.warning("--resume latest: skipping damaged checkpoint %s (%s); using %s", bad, why, ckpt)
            return ckpt
        skipped.append((ckpt, problem))
    if skipped:
        listing = "; ".join(f"{p.name}: {why}" for p, why in skipped)
        raise CheckpointError(f"--resume latest: every checkpoint in {checkpoint_dir(output_dir)} is damaged "
                              f"({listing}). Start a new run (--overwrite) or restore a copy.")  # fmt: skip
    return None


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """Compatibility name of :func:`find_resume_checkpoint`."""
    return find_resume_checkpoint(output_dir, resume)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def save_checkpoint(accelerator, output_dir: str | Path, step: int, keep: int, config_yaml: str | None = None,
                    extra: dict | None = None, save_extra=None) -> Path:  # fmt: skip
    """Collective: every process calls it. Returns the final path. ``config_yaml`` (the resolved config) is written
    into the checkpoint, so a checkpoint copied elsewhere still says what it was trained with; ``extra`` goes into
    its manifest (e.g. the student's largest weight); ``save_extra(folder)`` (collective) writes what accelerate
    does not (the FSDP2 engine's whole state, engine/parallel.py). Files are hashed and fsynced before the rename;
    a failed write (full disk) removes the partial folder and raises CheckpointError with the space a run needs."""
    root = checkpoint_dir(output_dir)
    final = checkpoint_path(output_dir, step)
    tmp = root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        if save_extra is not None:
            save_extra(tmp)
        fault_point("save_state", step)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if config_yaml is not None:
                (tmp / CONFIG_FILE).write_text(config_yaml)
            write_manifest(tmp, {"step": step, **(extra or {})})
            fault_point("manifest", step)
    except (OSError, RuntimeError) as err:
        written = _folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(output_dir)
        size = _folder_bytes(previous[-1]) if previous else written
        free = shutil.disk_usage(root).free if root.exists() else 0
        nospace = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "unexpected pos" in str(err)
        raise CheckpointError(
            f"writing checkpoint step {step} to {tmp} failed: {err}"
            + (" - most likely no space left on the device" if nospace else "")
            + f". {free / 2**30:.2f} GiB are free on that disk; a checkpoint takes about {size / 2**30:.2f} GiB and "
            f"a run needs room for train.checkpoints_keep + 1 = {keep + 1} of them. The partial folder was removed; "
            f"the last complete checkpoint is {previous[-1] if previous else 'none'} (resume with --resume latest)."
        ) from err
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        fault_point("rename", step)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
