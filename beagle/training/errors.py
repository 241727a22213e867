"""The exceptions `train_loop` raises for faults it recognises."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class TrainingInterrupted(Exception):
    """SIGTERM or Ctrl-C stopped training after a checkpoint of the current step was saved.

    `checkpoint_path` is that checkpoint (None when the loop had no `checkpoint_dir`);
    `step` is the global step count reached. The library never exits the process: a CLI
    turns this exception into its exit status.
    """

    def __init__(self, message: str, *, checkpoint_path: Path | None, step: int) -> None:
        super().__init__(message)
        self.checkpoint_path = checkpoint_path
        self.step = step


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or infinite metric (with `nan_mode="stop"`).

    `epoch` is 1-based, `step` is the global step index (the `s` of
    `jax.random.fold_in(rng_key, s)`), `names` the metrics that were not finite there.
    """

    def __init__(self, *, epoch: int, step: int, step_in_epoch: int, names: Sequence[str]):
        self.epoch = epoch
        self.step = step
        self.step_in_epoch = step_in_epoch
        self.names = tuple(names)
        super().__init__(
            f"non-finite {', '.join(self.names)} at epoch {epoch}, batch {step_in_epoch + 1} "
            f"of the epoch (global step {step}, counted from 0); training stopped and no "
            "checkpoint was written after it"
        )


class DataExhaustedError(RuntimeError):
    """A data iterator ended before giving the number of batches the loop was told to run."""
