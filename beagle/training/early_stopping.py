"""Early stopping on a history key: stop when it has not improved for `patience` epochs."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop training when history key `metric` has not improved for `patience` values.

    An improvement is a value below `best - min_delta` (`mode="min"`) or above
    `best + min_delta` (`mode="max"`). Epochs without a value for `metric` (a `val_` key
    between validations) do not count. `EarlyStopping("val_loss", "min", 3)`.
    """

    metric: str
    mode: Literal["min", "max"] = "min"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {self.mode!r}")
        if self.patience < 1:
            raise ValueError(f"EarlyStopping patience must be at least 1, got {self.patience}")
        if self.min_delta < 0:
            raise ValueError(f"EarlyStopping min_delta must be >= 0, got {self.min_delta}")

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` beats `best` by more than `min_delta` (NaN never does)."""
        if math.isnan(value):
            return False
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def initial_state(self) -> dict[str, Any]:
        """The tracking state before any value: no best, no waiting, not stopped."""
        return {"best": None, "best_epoch": None, "wait": 0, "stopped": False}

    def update(self, tracking: dict[str, Any], value: float, epoch: int) -> dict[str, Any]:
        """The tracking state after 1-based `epoch` gave `value`."""
        if self.improves(value, tracking["best"]):
            return {"best": value, "best_epoch": epoch, "wait": 0, "stopped": False}
        wait = tracking["wait"] + 1
        return {**tracking, "wait": wait, "stopped": wait >= self.patience}
