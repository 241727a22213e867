"""beagle's training runtime: `train_loop`, `TrainState`, checkpoints and metrics.

The seed's API (`docs/training.md`), plus the options and exceptions the generated step
modules and `beagle run` rely on. Not imported by `import beagle`.
"""

from beagle.training.calls import AutoChoice
from beagle.training.checkpoint import (
    CheckpointInfo,
    Checkpoints,
    checkpoint_info,
    checkpoints,
    latest_checkpoint,
    load_checkpoint,
    load_variables,
    save_checkpoint,
)
from beagle.training.early_stopping import EarlyStopping
from beagle.training.errors import DataExhaustedError, NonFiniteLossError, TrainingInterrupted
from beagle.training.loop import train_loop
from beagle.training.metrics import Metrics, average_metrics, format_metrics
from beagle.training.sharding import BatchShare, Placement, make_placement, shard
from beagle.training.state import TrainState, initial_dynamic_scale

__all__ = [
    "AutoChoice",
    "BatchShare",
    "CheckpointInfo",
    "Checkpoints",
    "DataExhaustedError",
    "EarlyStopping",
    "Metrics",
    "NonFiniteLossError",
    "Placement",
    "TrainState",
    "TrainingInterrupted",
    "average_metrics",
    "checkpoint_info",
    "checkpoints",
    "format_metrics",
    "initial_dynamic_scale",
    "latest_checkpoint",
    "load_checkpoint",
    "load_variables",
    "make_placement",
    "save_checkpoint",
    "shard",
    "train_loop",
]
