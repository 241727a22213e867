"""What a run returns, and the one error the runner raises itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from beagle.training.history import History

__all__ = ["COUNT_SUFFIXES", "Best", "BestCheckpoint", "RunRefused", "RunResult"]

COUNT_SUFFIXES = ("skipped_steps", "loss_scale_skips")
"""History keys ending so count steps per epoch (`beagle.training.metrics.COUNT_METRICS`,
named here without importing jax): printed as integers, never a best value."""


class RunRefused(Exception):
    """`beagle run` will not start: a refused resume or an unsupported section (exit 2).

    The message says what is wrong and what to do about it; the CLI prints it as it is.
    """


def early_stop_reason(epoch: int, metric: str | None) -> str:
    """`stopped early at epoch N (early_stopping on <metric>)`."""
    return f"stopped early at epoch {epoch} (early_stopping on {metric})"


@dataclass(frozen=True)
class Best:
    """The best value a history key reached, and the 1-based epoch it was measured at."""

    value: float
    epoch: int


@dataclass(frozen=True)
class BestCheckpoint:
    """The checkpoint to load for the best model, judged by one history key.

    `metric` is `checkpoint.best.metric`, else `early_stopping.metric`, else `val_loss`
    (`train_loss` without validation). `path` is the checkpoint folder, among those left on
    disk, of the epoch with the best value of `metric`; `epoch` and `value` are that
    epoch's. When the best epoch of the whole history has no checkpoint (it was not a saved
    epoch, or `keep` removed it), `best_epoch` names it and `unsaved` says why.
    """

    metric: str
    path: Path | None  # None: no checkpoint at the end of an epoch with a value is left
    epoch: int | None
    value: float | None
    best_epoch: int  # the epoch with the best value of `metric` in the history
    best_value: float
    unsaved: str | None = None  # why `best_epoch` has no checkpoint; None when it has one


@dataclass
class RunResult:
    """The outcome of `run_spec`."""

    status: Literal["done", "already_complete"]
    name: str
    run_dir: Path
    history: History
    final: dict[str, float]  # each history key's last value
    best: dict[str, Best]  # each history key's best value (max for accuracies, else min)
    wall_time_s: float  # the whole of this invocation: compile, set-up, training, files
    train_time_s: float  # inside train_loop
    steps: int  # optimizer steps taken by this invocation
    epochs: int  # epochs the run has completed in all (resumed ones included)
    checkpoint_dir: Path | None = None
    resumed_from: Path | None = None  # the checkpoint this invocation continued from
    files: dict[str, Path] = field(default_factory=dict)  # what -> where
    notes: list[str] = field(default_factory=list)  # what the run said along the way
    state: Any = None  # the final TrainState (None when already complete)
    stopped_early: bool = False  # early stopping ended the run (`CheckpointInfo.stopped_early`)
    early_stopping_metric: str | None = None  # the history key early stopping watches
    best_checkpoint: BestCheckpoint | None = None  # None without checkpoints
    process_index: int = 0  # this process, of `process_count` that trained together
    process_count: int = 1
    validation: str | None = None  # how much of the split a validation covers; None: none

    @property
    def stop_reason(self) -> str | None:
        """`stopped early at epoch N (early_stopping on <metric>)`, or None."""
        if not self.stopped_early:
            return None
        return early_stop_reason(self.epochs, self.early_stopping_metric)

    @property
    def steps_per_s(self) -> float:
        """Optimizer steps per second of training (0.0 when nothing ran)."""
        return self.steps / self.train_time_s if self.train_time_s > 0 else 0.0
