"""The run folder: `spec.yaml`, `<name>.py`, `history.json`, `metrics.csv`, `curves.png`, events.

`history.json` is exactly the history `train_loop` returns (nothing time-dependent), so an
interrupted-and-resumed run writes the same bytes as an uninterrupted one. The history, the
CSV and the TensorBoard events are written after every epoch (an interrupted run keeps
them); the plot, which costs a good fraction of a second, at the end of the run, also when
the run stops early.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beagle.runner.result import COUNT_SUFFIXES

if TYPE_CHECKING:
    from beagle.training.history import History

__all__ = [
    "RunFolder",
    "TensorBoardLog",
    "base_metrics",
    "epoch_rows",
    "higher_is_better",
    "validated_epochs",
    "write_text_atomic",
]

# Metric names whose larger values are better; everything else (losses, errors) is smaller.
_HIGHER_IS_BETTER = ("acc", "f1", "auc", "precision", "recall", "iou", "dice", "r2", "score")


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` is better (accuracy yes, loss no)."""
    lowered = name.lower()
    return any(word in lowered for word in _HIGHER_IS_BETTER)


def previous(path: Path) -> Path:
    """`<path>.previous`: where `--restart` keeps one generation of what it replaces."""
    return path.with_name(path.name + ".previous")


def keep_previous(folder: RunFolder, checkpoint_dir: Path | None) -> list[str]:
    """Move the checkpoint directory to `<checkpoint.dir>.previous` and the run's files to
    `<log.dir>.previous/`, replacing an older generation; what was moved, for the user."""
    moved = []
    if checkpoint_dir is not None and checkpoint_dir.is_dir() and any(checkpoint_dir.iterdir()):
        target = previous(checkpoint_dir)
        _remove(target)
        checkpoint_dir.rename(target)
        moved.append(f"the checkpoints to {target}")
    files = folder.run_files
    if files:
        target = previous(folder.path)
        _remove(target)
        target.mkdir(parents=True)
        for path in files:
            path.rename(target / path.name)
        moved.append(f"the run's files to {target}")
    return moved


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that a reader (or a kill) never sees it half-written."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def base_metrics(history: History) -> list[str]:
    """Metric names without their `train_`/`val_` prefix, in first-seen order."""
    names: list[str] = []
    for key in history:
        base = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
        if base not in names:
            names.append(base)
    return names


def validated_epochs(history: History, val_every: int) -> list[int]:
    """The 1-based epochs at which the `val_` entries were measured (every `val_every`)."""
    count = max((len(v) for k, v in history.items() if k.startswith("val_")), default=0)
    return [val_every * (i + 1) for i in range(count)]


def epoch_rows(history: History, val_every: int) -> list[dict[str, Any]]:
    """One row per epoch: `epoch`, then every history key (blank where not measured)."""
    epochs = max((len(v) for k, v in history.items() if k.startswith("train_")), default=0)
    val_at = {epoch: i for i, epoch in enumerate(validated_epochs(history, val_every))}
    rows: list[dict[str, Any]] = []
    for e in range(1, epochs + 1):
        row: dict[str, Any] = {"epoch": e}
        for key, values in history.items():
            if key.startswith("val_"):
                i = val_at.get(e)
                row[key] = values[i] if i is not None and i < len(values) else ""
            else:
                row[key] = values[e - 1] if e - 1 < len(values) else ""
        rows.append(row)
    return rows


class RunFolder:
    """The files of one run, in `log.dir`."""

    def __init__(self, path: Path, name: str, *, val_every: int = 1) -> None:
        self.path = path
        self.name = name
        self.val_every = val_every

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def module_file(self) -> Path:
        return self.path / f"{self.name}.py"

    @property
    def history_file(self) -> Path:
        return self.path / "history.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves_file(self) -> Path:
        return self.path / "curves.png"

    @property
    def run_file(self) -> Path:
        """`run.json`: what `beagle eval`, `predict`, `export` and `load_run` need to know."""
        return self.path / "run.json"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def run_files(self) -> list[Path]:
        """Everything a run writes into its folder (the checkpoints aside), that exists."""
        names = ("classes.json", "eval", self.tensorboard_dir.name)
        candidates = [
            self.spec_file,
            self.module_file,
            self.run_file,
            self.history_file,
            self.metrics_file,
            self.curves_file,
            *(self.path / name for name in names),
        ]
        return [path for path in candidates if path.exists()]

    def clear_outputs(self) -> None:
        """Remove what a previous run wrote (for `--restart` and fresh runs)."""
        for file in (self.history_file, self.metrics_file, self.curves_file):
            file.unlink(missing_ok=True)
        if self.tensorboard_dir.is_dir():
            shutil.rmtree(self.tensorboard_dir)

    def write_sources(self, spec_text: str, module_text: str) -> None:
        """The spec as run (overrides applied) and the module compiled from it."""
        self.create()
        write_text_atomic(self.spec_file, spec_text)
        write_text_atomic(self.module_file, module_text)

    def write_run_record(self, record: Mapping[str, Any]) -> None:
        write_text_atomic(self.run_file, json.dumps(record, indent=2, sort_keys=True) + "\n")

    def write_history(self, history: History) -> None:
        """`history.json` (exactly `history`) and `metrics.csv` (a row per epoch)."""
        self.create()
        plain = {key: [float(v) for v in values] for key, values in history.items()}
        write_text_atomic(self.history_file, json.dumps(plain, indent=2) + "\n")
        rows = epoch_rows(history, self.val_every)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch", *history], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_file, buffer.getvalue())

    def write_curves(
        self, history: History, title: str, maximise: Callable[[str], bool] | None = None
    ) -> Path | None:
        """`curves.png`: train and val curves, one subplot per metric. None when empty."""
        if not any(len(v) for v in history.values()):
            return None
        plot_curves(
            history, self.curves_file, title=title, val_every=self.val_every, maximise=maximise
        )
        return self.curves_file


def plot_curves(
    history: History,
    path: Path,
    *,
    title: str,
    val_every: int = 1,
    maximise: Callable[[str], bool] | None = None,
) -> None:
    """Draw train and val curves per metric into `path` (PNG).

    `maximise(key)` says whether a larger value of history key `key` is better (for the
    "best" marker); by default, names like accuracy are maximised and the rest minimised.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in base_metrics(history) if _worth_plotting(history, m)]
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    colours = {"train": "#1f77b4", "val": "#d62728"}
    val_epochs = validated_epochs(history, val_every)
    with plt.style.context("default"):
        figure, axes = plt.subplots(
            rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False
        )
        for ax in axes.flat[len(metrics) :]:
            ax.set_visible(False)
        for ax, metric in zip(axes.flat, metrics, strict=False):
            best_high = (
                maximise(f"val_{metric}") if maximise is not None else higher_is_better(metric)
            )
            for split in ("train", "val"):
                values = list(history.get(f"{split}_{metric}", []))
                if not values:
                    continue
                xs = list(range(1, len(values) + 1)) if split == "train" else val_epochs
                xs = xs[: len(values)]
                finite = [(x, v) for x, v in zip(xs, values, strict=False) if math.isfinite(v)]
                if not finite:
                    continue
                fx, fy = zip(*finite, strict=False)
                ax.plot(
                    fx,
                    fy,
                    color=colours[split],
                    label=split,
                    linewidth=1.8,
                    marker="o" if len(fx) <= 30 else None,
                    markersize=3.5,
                )
                if split == "val" or f"val_{metric}" not in history:
                    pick = max if best_high else min
                    bx, by = pick(finite, key=lambda item: item[1])
                    ax.scatter(
                        [bx],
                        [by],
                        s=80,
                        facecolors="none",
                        edgecolors="black",
                        linewidths=1.4,
                        zorder=5,
                        label=f"best {split}: {by:.4g} (epoch {bx})",
                    )
            ax.set_title(metric.replace("_", " "), fontsize=12, fontweight="bold")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            if _spans_decades(history, metric) and not best_high:
                ax.set_yscale("log")
                ax.set_ylabel(f"{metric} (log scale)")
            ax.grid(True, which="major", alpha=0.35)
            ax.grid(True, which="minor", alpha=0.12)
            ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
            ax.legend(frameon=False, loc="best")
            ax.spines[["top", "right"]].set_visible(False)
        figure.suptitle(title, fontsize=14)
        figure.tight_layout()
        temporary = path.with_name(f".{path.name}.tmp.png")
        figure.savefig(temporary, dpi=110)
        plt.close(figure)
    os.replace(temporary, path)


def _worth_plotting(history: History, metric: str) -> bool:
    values = [v for split in ("train", "val") for v in history.get(f"{split}_{metric}", [])]
    if not values:
        return False
    if metric in COUNT_SUFFIXES:  # a count: only interesting when something was skipped
        return any(v for v in values)
    return True


def _spans_decades(history: History, metric: str) -> bool:
    values = [
        v
        for split in ("train", "val")
        for v in history.get(f"{split}_{metric}", [])
        if math.isfinite(v)
    ]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 30


class TensorBoardLog:
    """TensorBoard scalars `train/<metric>` and `val/<metric>` per epoch, via tensorboardX.

    On a resumed run, `purge_step` tells TensorBoard to drop the events a killed process
    wrote past the checkpoint the run continues from, so the curves show each epoch once.
    """

    def __init__(self, folder: Path, *, val_every: int, resume_epoch: int = 0) -> None:
        from tensorboardX import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.val_every = val_every
        self._writer = SummaryWriter(
            logdir=str(folder), purge_step=resume_epoch + 1 if resume_epoch else None
        )
        self._val_written = 0

    def log_epoch(self, epoch: int, history: History) -> None:
        """Write the scalars of 1-based `epoch`, and of a validation measured at it."""
        for key, values in history.items():
            if key.startswith("val_") or len(values) < epoch:
                continue
            name = key.split("_", 1)[1] if key.startswith("train_") else key
            self._writer.add_scalar(f"train/{name}", float(values[epoch - 1]), epoch)
        val_epochs = validated_epochs(history, self.val_every)
        if val_epochs and val_epochs[-1] == epoch:
            index = len(val_epochs) - 1
            for key, values in history.items():
                if key.startswith("val_") and len(values) > index:
                    self._writer.add_scalar(f"val/{key[4:]}", float(values[index]), epoch)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
