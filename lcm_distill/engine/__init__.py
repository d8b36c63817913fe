"""The one training engine shared by LCD and LCF (Accelerate)."""

from .checkpoint import (
    CheckpointError,
    RunLayout,
    checkpoint_path,
    find_resume_checkpoint,
    list_checkpoints,
    resolve_resume,
    save_checkpoint,
    verify_checkpoint,
)
from .ema import ema_update
from .loop import (
    DataError,
    EngineState,
    NonFiniteLossError,
    TrainResult,
    build_accelerator,
    train,
)
from .preflight import Plan, preflight
from .setup import RunSetup, build_optimizer, load_run_models, set_up_run
from .step import StepResult, TrainStep

__all__ = [
    "CheckpointError",
    "DataError",
    "EngineState",
    "NonFiniteLossError",
    "Plan",
    "RunLayout",
    "RunSetup",
    "StepResult",
    "TrainResult",
    "TrainStep",
    "build_accelerator",
    "build_optimizer",
    "checkpoint_path",
    "ema_update",
    "find_resume_checkpoint",
    "list_checkpoints",
    "load_run_models",
    "preflight",
    "resolve_resume",
    "save_checkpoint",
    "set_up_run",
    "train",
    "verify_checkpoint",
]
