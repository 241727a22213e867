"""The table printed at the end of `beagle run`: final and best metrics, time, files."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from beagle.runner.result import COUNT_SUFFIXES, RunResult

__all__ = ["print_summary", "summary_renderable"]


def _format(value: float, key: str = "") -> str:
    if key.endswith(COUNT_SUFFIXES):  # a count per epoch, not a mean
        return f"{value:.0f}"
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def summary_renderable(result: RunResult) -> Panel:
    """The summary of `result` as a rich renderable."""
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2))
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column("best", justify="right")
    table.add_column("at epoch", justify="right")
    for key, final in result.final.items():
        best_value = result.best.get(key)
        table.add_row(
            key,
            _format(final, key),
            _format(best_value.value, key) if best_value else "",
            str(best_value.epoch) if best_value else "",
        )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    if result.status == "done":
        state = result.stop_reason or "done"
    elif result.stop_reason:
        state = f"already complete: {result.stop_reason}; nothing to train"
    else:
        state = "already complete: nothing to train"
    facts.add_row("status", state)
    facts.add_row("epochs", str(result.epochs))
    if result.status == "done":
        facts.add_row(
            "wall time", f"{result.wall_time_s:.1f} s (training {result.train_time_s:.1f} s)"
        )
        facts.add_row("steps", f"{result.steps} at {result.steps_per_s:,.1f} steps/s")
    if result.validation is not None:
        facts.add_row("validation", result.validation)
    best = result.best_checkpoint
    if best is not None:
        if best.path is None:
            facts.add_row("best checkpoint", f"none left with a value of {best.metric}")
        else:
            facts.add_row(
                "best checkpoint",
                f"{best.path} (epoch {best.epoch}, {best.metric} "
                f"{_format(best.value or 0.0, best.metric)})",
            )
        if best.unsaved is not None:
            facts.add_row(
                "",
                f"the best {best.metric}, {_format(best.best_value, best.metric)} at epoch "
                f"{best.best_epoch}, has no checkpoint: {best.unsaved}",
            )
    if result.resumed_from is not None:
        facts.add_row("resumed from", str(result.resumed_from))
    for what, path in result.files.items():
        facts.add_row(what, str(path))
    parts: list[Table | Text] = [facts]
    if result.final:
        parts = [table, Text(""), facts]
    return Panel(Group(*parts), title=f"[bold]{result.name}[/bold]", expand=False)


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """Print the summary of `result` (to stdout unless `console` says otherwise)."""
    (console or Console()).print(summary_renderable(result))
