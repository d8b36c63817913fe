"""A test hook for the crash matrix: ``LCM_DISTILL_FAULT=<point>:<step>[:<rank>]`` makes this process SIGKILL itself
when it reaches ``point`` at ``step`` (on ``rank``, default every rank), so tests/engine/test_faults.py can crash a
run *inside* a checkpoint write or an export, deterministically, instead of racing a timer.

Points: ``step`` (after the optimiser step, before any checkpoint of it), ``save_state`` (accelerate's files are in
the temporary folder, no manifest yet), ``manifest`` (complete temporary folder, not renamed), ``rename`` (renamed,
old checkpoints not rotated out yet), ``export`` (the student pipeline is written, the target is not).
Unset (every real run), each point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "LCM_DISTILL_FAULT"
POINTS = ("step", "save_state", "manifest", "rename", "export")


def fault_point(point: str, step: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, at, *rank = spec.split(":")
    if name not in POINTS:
        raise ValueError(f"{FAULT_ENV}={spec}: unknown point {name!r}; one of {POINTS}")
    if name == point and int(at) == step and (not rank or int(rank[0]) == int(os.environ.get("RANK", "0"))):
        os.kill(os.getpid(), signal.SIGKILL)
