"""The one training engine shared by LCD and LCF (Accelerate)."""

from .checkpoint import list_checkpoints, resolve_resume, save_checkpoint
from .ema import ema_update
from .loop import EngineState, NonFiniteLossError, TrainResult, train

__all__ = [
    "EngineState",
    "NonFiniteLossError",
    "TrainResult",
    "ema_update",
    "list_checkpoints",
    "resolve_resume",
    "save_checkpoint",
    "train",
]
