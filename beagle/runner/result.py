"""What a run returns, and the one error the runner raises itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Best", "RunRefused", "RunResult"]


class RunRefused(Exception):
    """`beagle run` will not start: a refused resume or an unsupported section (exit 2).

    The message says what is wrong and what to do about it; the CLI prints it as it is.
    """


@dataclass(frozen=True)
class Best:
    """The best value a history key reached, and the 1-based epoch it was measured at."""

    value: float
    epoch: int


@dataclass
class RunResult:
    """The outcome of `run_spec`."""

    status: Literal["done", "already_complete"]
    name: str
    run_dir: Path
    history: dict[str, list[float]]
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
    # `stopped early at epoch N (early_stopping on <metric>)` when early stopping ended it
    stopped_early: str | None = None

    @property
    def steps_per_s(self) -> float:
        """Optimizer steps per second of training (0.0 when nothing ran)."""
        return self.steps / self.train_time_s if self.train_time_s > 0 else 0.0
