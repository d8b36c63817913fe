"""The one training engine shared by LCD and LCF (Accelerate)."""

from .checkpoint import RunLayout, checkpoint_path, list_checkpoints, resolve_resume, save_checkpoint
from .ema import ema_update
from .loop import (
    EngineState,
    NonFiniteLossError,
    TrainResult,
    build_accelerator,
    build_optimizer,
    load_run_models,
    preflight,
    train,
)
from .step import StepResult, TrainStep

__all__ = [
    "EngineState",
    "NonFiniteLossError",
    "RunLayout",
    "StepResult",
    "TrainResult",
    "TrainStep",
    "build_accelerator",
    "build_optimizer",
    "checkpoint_path",
    "ema_update",
    "list_checkpoints",
    "load_run_models",
    "preflight",
    "resolve_resume",
    "save_checkpoint",
    "train",
]
