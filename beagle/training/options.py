"""`LoopOptions`: `train_loop`'s arguments, checked once before anything runs.

Each check says what was given and what to pass instead. The history keys that
`best_metric` and `early_stopping.metric` name are checked twice: here for their form
(`train_<m>`, or `val_<m>` with a `val_step_fn`), and by the loop against the metrics the
steps actually return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from beagle.training.calls import AutoChoice, StepsPerCall
from beagle.training.early_stopping import EarlyStopping
from beagle.training.history import History


def _iterable_or_callable(value: Any) -> bool:
    return hasattr(value, "__next__") or callable(value) or isinstance(value, Iterable)


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """`train_loop`'s arguments other than the state and the key (see its docstring)."""

    train_step_fn: Callable[..., tuple[Any, Mapping[str, Any]]]
    data_iterator_fn: Callable[..., Iterable[Any]]
    num_epochs: int
    num_batches: int
    checkpoint_dir: str | Path | None
    checkpoint_every: int
    val_step_fn: Callable[..., tuple[Any, Mapping[str, Any]]] | None
    val_data_iterator: Any
    val_num_batches: int | None
    show_progress: bool
    steps_per_call: StepsPerCall
    one_step_fn: Callable[..., tuple[Any, Mapping[str, Any]]] | None
    on_steps_per_call: Callable[[AutoChoice], None] | None
    nan_mode: str
    resume: bool
    keep: int
    best_metric: str | None
    best_mode: str
    early_stopping: EarlyStopping | None
    val_every: int
    metadata: Mapping[str, str] | None
    on_epoch_end: Callable[[int, History], None] | None
    copy_state: bool = True

    def __post_init__(self) -> None:
        self._check_functions()
        self._check_counts()
        self._check_validation()
        self._check_history_keys()
        if self.checkpoint_dir is None and (self.resume or self.best_metric is not None):
            raise ValueError("resume and best_metric need a checkpoint_dir")

    def _check_functions(self) -> None:
        if not callable(self.train_step_fn):
            raise TypeError(
                "train_step_fn must be a function (state, batch, rng_key) -> (state, metrics); "
                f"got a {type(self.train_step_fn).__name__}"
            )
        if not callable(self.data_iterator_fn):
            kind = type(self.data_iterator_fn).__name__
            raise TypeError(
                "data_iterator_fn must be a zero-argument function that returns an iterator "
                "over one epoch's batches, called afresh every epoch (e.g. `lambda: "
                "iter(batches)`, or a generator function itself: `make_batches`, not "
                f"`make_batches()`); got a {kind}"
                + (" object, which would be used up after one epoch" if kind == "generator" else "")
            )

    def _check_counts(self) -> None:
        if self.num_epochs < 0:
            raise ValueError(f"num_epochs must be >= 0, got {self.num_epochs}")
        if self.num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {self.num_batches}")
        self._check_steps_per_call()
        if self.nan_mode not in ("stop", "skip"):
            raise ValueError(f"nan_mode must be 'stop' or 'skip', got {self.nan_mode!r}")
        if self.checkpoint_every < 1 or self.val_every < 1 or self.keep < 1:
            raise ValueError("checkpoint_every, val_every and keep must be >= 1")
        if self.best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")

    def _check_steps_per_call(self) -> None:
        k = self.steps_per_call
        if k != "auto" and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"steps_per_call must be an integer >= 1 or 'auto', got {k!r}")
        if self.one_step_fn is not None and not callable(self.one_step_fn):
            raise TypeError(
                "one_step_fn must be a function (state, batch, rng_key) -> (state, metrics); "
                f"got a {type(self.one_step_fn).__name__}"
            )
        if self.one_step_fn is not None or k == 1:
            return
        if k == "auto":
            raise ValueError(
                "steps_per_call='auto' times single steps against calls of several, so it "
                "needs both: pass the single step as one_step_fn=(state, batch, rng_key), "
                "and train_step_fn taking stacked batches and keys of any leading length"
            )
        if self.num_batches % k:
            raise ValueError(
                f"num_batches={self.num_batches} is not a multiple of steps_per_call={k}: "
                f"pass one_step_fn (the single step, (state, batch, rng_key)) to run the "
                f"{self.num_batches % k} steps left over in each epoch one at a time"
            )

    def _check_validation(self) -> None:
        if (self.val_step_fn is None) != (self.val_data_iterator is None):
            raise ValueError("val_step_fn and val_data_iterator must be given together")
        if self.val_data_iterator is not None and not _iterable_or_callable(self.val_data_iterator):
            raise TypeError("val_data_iterator must be an iterator, an iterable or a callable")
        if self.val_num_batches is not None and self.val_num_batches < 1:
            raise ValueError(f"val_num_batches must be >= 1 or None, got {self.val_num_batches}")

    def _check_history_keys(self) -> None:
        for option, name in self.watched():
            if name.startswith("train_") or (
                name.startswith("val_") and self.val_step_fn is not None
            ):
                continue
            hint = (
                f"'train_<m>' for a metric m of train_step_fn (e.g. 'train_{name}')"
                if not name.startswith("val_")
                else "'train_<m>' (there is no val_step_fn, so no 'val_' keys)"
            )
            raise ValueError(
                f"{option}={name!r} is not a history key (nor can become one): use {hint}"
            )

    def watched(self) -> list[tuple[str, str]]:
        """(option, history key) of the options that name a history key."""
        watched = []
        if self.early_stopping is not None:
            watched.append(("early_stopping.metric", self.early_stopping.metric))
        if self.best_metric is not None:
            watched.append(("best_metric", self.best_metric))
        return watched
