"""Progress display: a rich bar per epoch (steps/s, ETA, latest metrics) and a line per epoch.

The loop calls `update` at most every `refresh_seconds`; the metrics it shows come from a
step that has already finished (a lagged read), so showing them never waits for the device.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from beagle.training.metrics import fetch_to_host, format_metrics

LINE_WIDTH = 100
"""The epoch lines wrap to stay within this many columns."""


def epoch_lines(
    epoch: int,
    num_epochs: int,
    values: Mapping[str, float],
    seconds: float,
    steps: int,
    width: int = LINE_WIDTH,
) -> list[str]:
    """`epoch 3/10  train_loss: 0.1234, val_loss: 0.2345  (1.20s, 83.3 steps/s)`.

    One line when it fits in `width` columns. Otherwise the metrics wrap under the first
    one, and the validation metrics start a line of their own, so that ten metrics read as
    a short block rather than a line of 260 columns.
    """
    head = f"epoch {epoch}/{num_epochs}  "
    rate = f", {steps / seconds:,.1f} steps/s" if seconds > 0 and steps else ""
    tail = f"  ({seconds:.2f}s{rate})"
    items = [format_metrics({name: value}) for name, value in values.items()]
    single = head + ", ".join(items) + tail
    if len(single) <= width or not items:
        return [single]
    groups: list[list[str]] = [[], []]
    for name, item in zip(values, items, strict=True):
        groups[name.startswith("val_")].append(item)
    indent = " " * len(head)
    lines: list[str] = []
    for group in (g for g in groups if g):
        line = ""
        for item in group:
            if line and len(line) + len(", ") + len(item) + len(",") > width:
                lines.append(line + ",")
                line = ""
            line = f"{line}, {item}" if line else (head if not lines else indent) + item
        lines.append(line)
    if len(lines[-1]) + len(tail) > width:
        lines.append(indent + tail.lstrip())
    else:
        lines[-1] += tail
    return lines


def ready_values(metrics: Mapping[str, jax.Array] | None) -> dict[str, float] | None:
    """A finished step's metrics on the host, or None if that step still runs."""
    if not isinstance(metrics, Mapping):
        return None  # none yet, or not a dict (the fold reports that)
    leaves = jax.tree_util.tree_leaves(metrics)
    if not all(not isinstance(x, jax.Array) or x.is_ready() for x in leaves):  # type: ignore[attr-defined]
        return None
    host = fetch_to_host(metrics)
    return {name: float(np.asarray(value).reshape(-1)[-1]) for name, value in host.items()}


class _StepsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- steps/s" if speed is None else f"{speed:,.1f} steps/s")


class EpochProgress:
    """One transient rich bar per epoch, then one printed line with the epoch's metrics."""

    refresh_seconds = 0.25

    def __init__(self, num_epochs: int, console: Console | None = None) -> None:
        self.num_epochs = num_epochs
        self.console = console or Console()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start_epoch(self, epoch: int, total_steps: int, completed: int) -> None:
        """Show the bar of 1-based `epoch`, `completed` of `total_steps` steps done."""
        if not (self.console.is_terminal or self.console.is_jupyter):
            return  # a log file gets the epoch lines only
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{self.num_epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            _StepsPerSecond(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
            auto_refresh=False,
            speed_estimate_period=10.0,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=total_steps, completed=completed, metrics=""
        )
        self._progress.refresh()

    def update(self, completed: int, metrics: Mapping[str, float] | None = None) -> None:
        """Move the bar to `completed` steps; show `metrics` when given."""
        if self._progress is None or self._task is None:
            return
        if metrics is not None:
            self._progress.update(self._task, completed=completed, metrics=format_metrics(metrics))
        else:
            self._progress.update(self._task, completed=completed)
        self._progress.refresh()

    def end_epoch(
        self, epoch: int, values: Mapping[str, float], seconds: float, steps: int
    ) -> None:
        """Replace the bar with the epoch's line(s): its train and validation metrics."""
        self.close()
        for line in epoch_lines(epoch, self.num_epochs, values, seconds, steps):
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def close(self) -> None:
        """Remove the bar, if one is shown."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
