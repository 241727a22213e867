"""`train_loop`: runs jitted steps over epochs, without waiting on the device per step.

Per step the loop only takes a batch, calls the step with a key it derived ahead of time
(`rng.step_keys`: a chunk's keys computed on the host, no device work, for the default
keys) and keeps the returned metrics: the step is the only device program per step. Every
`chunk` calls one jitted fold adds them to on-device sums, and the host reads the sums
once per epoch. Checkpoints (see `checkpoint.py`) carry everything an exact resume needs
(a `resume.ResumeRecord`), including the not yet folded metrics of a partial epoch.
With several processes (`jax.process_count() > 1`) a stop signal is acted on between
chunks, once every process agrees, so that all of them save the same step.

Beside it: `options.py` checks the arguments, `calls.py` plans which steps run as one call
(calls of `steps_per_call` steps, an epoch's remainder one step at a time, and `auto`'s
trial), `batches.py` reads batches and step outputs, `signals.py` turns SIGTERM and Ctrl-C
into a checkpoint and `TrainingInterrupted`, and `progress.py` draws the bar and the epoch
lines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from beagle.training.batches import (
    bad_step_output,
    batch_size,
    stack_batches,
    takes_epoch,
    takes_start,
)
from beagle.training.calls import (
    AutoChoice,
    AutoTrial,
    Calls,
    StepsPerCall,
    calls_from,
    epoch_calls,
)
from beagle.training.checkpoint import (
    CheckpointWriter,
    latest_checkpoint,
    restore_checkpoint,
)
from beagle.training.early_stopping import EarlyStopping
from beagle.training.errors import DataExhaustedError, NonFiniteLossError, TrainingInterrupted
from beagle.training.history import History, copy_history
from beagle.training.metrics import StepMetricSums, SumsOnHost, read_sums
from beagle.training.options import LoopOptions
from beagle.training.progress import EpochProgress, ready_values
from beagle.training.resume import KeyRecord, ResumeRecord
from beagle.training.rng import host_key, step_keys, validation_key
from beagle.training.signals import StopRequest, StopRequested, stop_signals

StateT = TypeVar("StateT")

CHUNK_STEPS = 256
"""Steps whose metrics one fold (and one key derivation) covers."""


class _TrialClock:
    """Times a trial's steady calls: it waits for a call's result before reading the clock,
    so the time is the device's work, not the dispatch."""

    def __init__(self) -> None:
        self.started = 0.0

    def start(self, state: Any) -> None:
        jax.block_until_ready(state)
        self.started = time.perf_counter()

    def stop(self, state: Any) -> float:
        jax.block_until_ready(state)
        return time.perf_counter() - self.started


@jax.jit
def _copy_tree(tree: Any) -> Any:
    # Fresh buffers: the caller's state survives donation, and a checkpoint being
    # written in the background never shares memory with a buffer a step donates.
    return jax.tree.map(jnp.copy, tree)


def _snapshot(tree: Any) -> Any:
    """What a checkpoint saves: the state as it is now, safe from the steps that follow.

    Orbax copies a state to the host to write it; here that copy is made in the loop's
    thread, before the next step may donate the buffers, and the background save writes
    the host arrays: no device copy (on the CPU the host arrays are views, and a step
    does not donate a buffer a view holds). A state spread over several processes is
    not this host's to read: it gets a fresh on-device copy, which orbax then saves.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if all(not isinstance(leaf, jax.Array) or leaf.is_fully_addressable for leaf in leaves):
        return jax.device_get(tree)
    return _copy_tree(tree)


def _is_deleted(tree: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in leaves)


class _Run:
    """One call of `train_loop`: the loop's mutable bookkeeping and its steps."""

    def __init__(self, cfg: LoopOptions, state: Any, rng_key: jax.Array) -> None:
        self.cfg = cfg
        self.state = state
        self.rng_key = host_key(rng_key)  # numpy for a raw threefry key: see rng.py
        self.auto: AutoTrial | None = None  # steps_per_call="auto": the trial, then its choice
        self.auto_choice: AutoChoice | None = None  # the choice a resumed checkpoint made
        self.told_choice = False
        self.stop_on_skipped = self.cfg.nan_mode == "stop"
        self.history: History = {}
        self.epoch = 0  # completed epochs
        self.position = 0  # steps done in the current epoch
        self.global_step = 0
        self.sums = StepMetricSums(stop_on_skipped=self.stop_on_skipped)
        self.stopping = self.cfg.early_stopping.initial_state() if self.cfg.early_stopping else None
        self.best: dict[str, Any] | None = None
        self.validations = 0
        self.saved_step: int | None = None
        self.stop = StopRequest()
        self.solo = jax.process_count() == 1
        self.writer: CheckpointWriter | None = None
        self.progress = EpochProgress(self.cfg.num_epochs) if self.cfg.show_progress else None
        self.train_names_checked = False
        self.train_takes_epoch = takes_epoch(self.cfg.data_iterator_fn)
        self.train_takes_start = takes_start(self.cfg.data_iterator_fn)
        self.val_takes_epoch = (
            callable(self.cfg.val_data_iterator)
            and not hasattr(self.cfg.val_data_iterator, "__next__")
            and takes_epoch(self.cfg.val_data_iterator)
        )

    # ---------------------------------------------------------------- driver
    def run(self) -> tuple[Any, History]:
        try:
            with stop_signals(self.stop):
                self._open()
                if self.cfg.steps_per_call == "auto":
                    self.auto = AutoTrial(
                        self.cfg.num_batches, self.auto_choice, agree=self._agree_on_timings
                    )
                try:
                    self._epochs()
                except (StopRequested, KeyboardInterrupt) as exc:
                    if self.stop.forced:
                        raise  # a second signal: no save, straight out
                    self._interrupted(exc)
            return self.state, self.history
        finally:
            if self.progress is not None:
                self.progress.close()
            if self.writer is not None:
                self.writer.close()

    def _fresh_state(self) -> None:
        """Train a copy of the caller's state, unless the caller gave it up (`copy_state`)."""
        if self.cfg.copy_state:
            self.state = _copy_tree(self.state)

    def _open(self) -> None:
        if self.cfg.checkpoint_dir is None:
            self._fresh_state()
            return
        latest = latest_checkpoint(self.cfg.checkpoint_dir)
        if latest is not None and not self.cfg.resume:
            raise FileExistsError(
                f"checkpoint_dir {self.cfg.checkpoint_dir} already holds checkpoints "
                f"({latest.name} is the latest); pass resume=True to continue the run saved "
                "there, or pass another checkpoint_dir (a new or empty directory) to start "
                "a new run"
            )
        self.writer = CheckpointWriter(
            self.cfg.checkpoint_dir, keep=self.cfg.keep, keep_best=self.cfg.best_metric is not None
        )
        if latest is None:
            self._fresh_state()
            return
        self.state, record = restore_checkpoint(latest, self.state)
        self._apply_record(record, latest)

    def _apply_record(self, record: ResumeRecord, path: Path) -> None:
        if not record.from_loop:
            raise ValueError(
                f"cannot resume from {path}: it was saved by save_checkpoint, without "
                "train_loop's resume record (RNG key, epoch, position, history). To train "
                f"on from it, load its state with load_checkpoint({str(path)!r}, state) and "
                "pass that state to train_loop with a new, empty checkpoint_dir (and "
                "resume=False)"
            )
        assert record.rng_key is not None
        position = record.position
        if position and record.num_batches != self.cfg.num_batches:
            raise ValueError(
                f"{path} stopped {position} steps into an epoch of "
                f"{record.num_batches} batches; resume it with "
                f"num_batches={record.num_batches}, not {self.cfg.num_batches}"
            )
        k = self.cfg.steps_per_call
        if isinstance(k, int) and position % k and self.cfg.one_step_fn is None:
            raise ValueError(
                f"{path} stopped at step {position} of its epoch, which is not a multiple of "
                f"steps_per_call={k}; pass one_step_fn (the single step) to reach the next "
                "call with single steps"
            )
        self.global_step = record.step
        self.epoch = record.epoch
        self.position = position
        self.history = copy_history(record.history)
        self.rng_key = host_key(record.rng_key.to_key(self.rng_key))
        self.validations = record.validations
        if record.partial is not None:
            self.sums = StepMetricSums.from_json(
                record.partial, stop_on_skipped=self.stop_on_skipped
            )
        if self.cfg.early_stopping is not None and record.early_stopping is not None:
            self.stopping = dict(record.early_stopping)
        self.best = None if record.best is None else dict(record.best)
        self.saved_step = self.global_step
        self.auto_choice = record.auto_choice

    def _epochs(self) -> None:
        while self.epoch < self.cfg.num_epochs and not (self.stopping and self.stopping["stopped"]):
            if self._stopping():  # arrived during the previous epoch's end
                raise StopRequested
            started = time.perf_counter()
            if self.progress is not None:
                self.progress.start_epoch(self.epoch + 1, self.cfg.num_batches, self.position)
            if self.position < self.cfg.num_batches:
                self._train_steps()
            self._end_epoch(started)
        if self.writer is not None:
            if self.saved_step != self.global_step:
                self._save(finished=True)
            self.writer.wait()  # the final save, with the signal handlers still in place
        if self._stopping():  # arrived during the last epoch's end or the final save
            raise StopRequested

    # ---------------------------------------------------------------- training
    def _open_train_iterator(self) -> Iterator[Any]:
        """This epoch's batches from `position` on: a function that takes `start` seeks
        there itself; for one that does not, the loop replays the first `position`."""
        keywords: dict[str, int] = {}
        if self.train_takes_epoch:
            keywords["epoch"] = self.epoch
        if self.train_takes_start:
            keywords["start"] = self.position
        iterator = iter(self.cfg.data_iterator_fn(**keywords))
        if not self.train_takes_start:
            for taken in range(self.position):  # resuming inside an epoch: replay
                self._next_train_batch(iterator, taken)
        return iterator

    def _next_train_batch(self, iterator: Iterator[Any], taken: int) -> Any:
        try:
            return next(iterator)
        except StopIteration:
            raise self._train_exhausted(taken) from None

    def _train_exhausted(self, taken: int) -> DataExhaustedError:
        return DataExhaustedError(
            f"data_iterator_fn() gave only {taken} of num_batches={self.cfg.num_batches} "
            f"batches in epoch {self.epoch + 1}/{self.cfg.num_epochs}; its iterator must "
            "yield at least num_batches batches every epoch (lower num_batches, or "
            "make data_iterator_fn yield more)"
        )

    def _train_steps(self) -> None:
        iterator = self._open_train_iterator()
        self._tell_choice()
        for calls in self._epoch_runs():  # lazily: auto's trial decides as the runs end
            self._train_calls(iterator, calls)
            self._tell_choice()

    def _epoch_runs(self) -> Iterator[Calls]:
        """This epoch's runs of calls from `position` on (see `calls.py`)."""
        if self.auto is not None:
            return self.auto.runs(self.epoch, self.position)
        k = self.cfg.steps_per_call
        assert isinstance(k, int)
        return iter(calls_from(epoch_calls(k, self.cfg.num_batches), self.position))

    def _tell_choice(self) -> None:
        """Once per `train_loop` call, as soon as `auto` has a K: pass it on."""
        if self.auto is None or self.auto.choice is None or self.told_choice:
            return
        self.told_choice = True
        if self.cfg.on_steps_per_call is not None:
            self.cfg.on_steps_per_call(self.auto.choice)

    def _train_calls(self, iterator: Iterator[Any], calls: Calls) -> None:
        k = calls.steps_per_call
        step_fn = self.cfg.train_step_fn
        if k == 1 and self.cfg.steps_per_call != 1:
            assert self.cfg.one_step_fn is not None  # LoopOptions and _apply_record check it
            step_fn = self.cfg.one_step_fn
        sums = self.sums
        stop = self.stop
        progress = self.progress
        next_refresh = time.perf_counter() + EpochProgress.refresh_seconds
        lagged: Any = None
        recent: Any = None
        first_step = self.global_step - self.position + calls.offset
        chunk_calls = max(1, CHUNK_STEPS // k)
        clock = _TrialClock() if calls.timed else None
        call = calls.first
        if call % chunk_calls == 0:
            # A run resumed where a chunk (or a run of another K) ended may still hold its
            # steps unfolded: fold them alone, as the uninterrupted run did.
            sums.fold()
        while call < calls.count:
            chunk_start = call - call % chunk_calls
            chunk_len = min(chunk_calls, calls.count - chunk_start)
            keys = step_keys(self.rng_key, first_step + chunk_start * k, chunk_len, k)
            for index in range(call - chunk_start, chunk_len):
                if k == 1:
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        raise self._train_exhausted(self.position) from None
                    output = step_fn(self.state, batch, keys[index])
                    try:
                        self.state, metrics = output
                    except (TypeError, ValueError):
                        raise bad_step_output("train_step_fn", output) from None
                    sums.add_step(metrics, batch_size(batch))
                else:
                    parts = [self._next_train_batch(iterator, self.position + i) for i in range(k)]
                    batch = stack_batches(parts, self.position)
                    output = step_fn(self.state, batch, keys[index])
                    try:
                        self.state, metrics = output
                    except (TypeError, ValueError):
                        raise bad_step_output("train_step_fn", output) from None
                    sums.add(metrics, [batch_size(part) for part in parts])
                self.position += k
                self.global_step += k
                if clock is not None and chunk_start + index == 0:
                    clock.start(self.state)  # after the call that compiled
                if stop.requested and self.solo:
                    raise StopRequested
                if progress is not None:
                    lagged, recent = recent, metrics
                    if time.perf_counter() >= next_refresh:
                        progress.update(self.position, ready_values(lagged))
                        next_refresh = time.perf_counter() + EpochProgress.refresh_seconds
            if clock is not None and chunk_start + chunk_len == calls.count:
                assert self.auto is not None
                self.auto.timed(calls, clock.stop(self.state))
            sums.fold()
            if not self.train_names_checked and sums.names is not None:
                self._check_train_names(sums.names)
            call = chunk_start + chunk_len
            if not self.solo and self._stopping():
                raise StopRequested

    def _agree_on_timings(self, timings: dict[int, float]) -> dict[int, float]:
        """With several processes, process 0's trial timings, so that all choose one K."""
        if self.solo or not timings:
            return timings
        from jax.experimental import multihost_utils

        ks = sorted(timings)
        shared = multihost_utils.broadcast_one_to_all(
            np.asarray([timings[k] for k in ks], np.float64)
        )
        return {k: float(v) for k, v in zip(ks, np.asarray(shared), strict=True)}

    def _stopping(self) -> bool:
        """Whether a stop was requested. With several processes, whether any of them got
        one: every process must stop (and save) at the same step, so they agree on it in
        a collective, which the loop calls only between chunks and epochs."""
        if self.solo:
            return self.stop.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray([self.stop.requested]))
        return bool(np.any(flags))

    def _raise_if_not_finite(self, totals: SumsOnHost | None) -> None:
        if totals is None or totals.bad_step is None:
            return
        raise NonFiniteLossError(
            epoch=self.epoch + 1,
            step=self.global_step - self.position + totals.bad_step,
            step_in_epoch=totals.bad_step,
            names=totals.bad_names,
        )

    # ---------------------------------------------------------------- epoch end
    def _end_epoch(self, started: float) -> None:
        epoch = self.epoch + 1
        self.sums.fold()
        # Validation is dispatched before the epoch's sums are read, so that one transfer
        # (one wait for the device) per epoch serves both.
        validating = self.cfg.val_step_fn is not None and epoch % self.cfg.val_every == 0
        val_sums = self._validate() if validating else None
        if val_sums is None:
            totals, val_totals = read_sums([self.sums])[0], None
        else:
            totals, val_totals = read_sums([self.sums, val_sums])
        self._raise_if_not_finite(totals)
        entry = {} if totals is None else totals.history_values(self.sums.has_skipped)
        values = {f"train_{name}": value for name, value in entry.items()}
        if val_sums is not None:
            val_entry = (
                {} if val_totals is None else val_totals.history_values(val_sums.has_skipped)
            )
            values.update({f"val_{name}": value for name, value in val_entry.items()})
            self.validations += 1
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)
        self.epoch = epoch
        self.position = 0
        self.sums = StepMetricSums(stop_on_skipped=self.stop_on_skipped)
        best_value = self._track(values)
        finished = self.epoch >= self.cfg.num_epochs or bool(
            self.stopping and self.stopping["stopped"]
        )
        if self.writer is not None and (finished or self.epoch % self.cfg.checkpoint_every == 0):
            # The best is the best checkpoint: only an epoch that is saved can become it.
            self._save(finished=finished, best=self._improves_best(best_value))
        if self.progress is not None:
            self.progress.end_epoch(
                epoch, values, time.perf_counter() - started, self.cfg.num_batches
            )
        if self.cfg.on_epoch_end is not None:
            self.cfg.on_epoch_end(epoch, copy_history(self.history))

    def _track(self, values: Mapping[str, float]) -> float | None:
        """Update early stopping and the best metric; the best metric's value this epoch."""
        if self.cfg.early_stopping is not None and self.stopping is not None:
            name = self.cfg.early_stopping.metric
            self._check_history_key(name, "early_stopping.metric")
            if name in values:
                self.stopping = self.cfg.early_stopping.update(
                    self.stopping, values[name], self.epoch
                )
        if self.cfg.best_metric is None:
            return None
        self._check_history_key(self.cfg.best_metric, "best_metric")
        return values.get(self.cfg.best_metric)

    def _improves_best(self, value: float | None) -> bool:
        """Record this epoch as the best if `value` is strictly better (ties keep the first)."""
        if value is None or math.isnan(value):
            return False
        best = None if self.best is None else float(self.best["value"])
        if best is not None and not (value < best if self.cfg.best_mode == "min" else value > best):
            return False
        self.best = {
            "metric": self.cfg.best_metric,
            "mode": self.cfg.best_mode,
            "value": value,
            "epoch": self.epoch,
            "step": self.global_step,
        }
        return True

    def _check_train_names(self, names: frozenset[str]) -> None:
        """Once the first steps' metric names are known: do the `train_` options exist?"""
        self.train_names_checked = True
        keys = sorted(f"train_{name}" for name in names)
        for option, name in self.cfg.watched():
            if name.startswith("train_") and name not in keys:
                raise ValueError(
                    f"{option}={name!r} is not a history key: train_step_fn returns the "
                    f"metrics {sorted(names)}, so the train keys are {', '.join(keys)}"
                )

    def _check_history_key(self, name: str, option: str) -> None:
        if name in self.history:
            return
        if name.startswith("val_") and self.cfg.val_step_fn is not None and self.validations == 0:
            return  # no validation has run yet
        raise ValueError(
            f"{option}={name!r} is not a history key; the history has "
            f"{', '.join(sorted(self.history)) or 'no keys'}"
        )

    # ---------------------------------------------------------------- validation
    def _open_val_iterator(self) -> tuple[Iterator[Any], bool]:
        source = self.cfg.val_data_iterator
        if hasattr(source, "__next__"):
            return source, False
        if callable(source):
            made = source(epoch=self.epoch) if self.val_takes_epoch else source()
            return iter(made), True
        return iter(source), True

    def _validate(self) -> StepMetricSums:
        """Dispatch one validation pass; its sums stay on the device."""
        val_step_fn = self.cfg.val_step_fn
        assert val_step_fn is not None
        iterator, fresh = self._open_val_iterator()
        wanted = self.cfg.val_num_batches
        root = validation_key(self.rng_key, self.epoch)
        sums = StepMetricSums(stop_on_skipped=False, source="val_step_fn")
        done = 0
        while wanted is None or done < wanted:
            chunk_len = CHUNK_STEPS if wanted is None else min(CHUNK_STEPS, wanted - done)
            keys = step_keys(root, done, chunk_len)
            ended = False
            for index in range(chunk_len):
                try:
                    batch = next(iterator)
                except StopIteration:
                    ended = True
                    break
                output = val_step_fn(self.state, batch, keys[index])
                try:
                    _, metrics = output
                except (TypeError, ValueError):
                    raise bad_step_output("val_step_fn", output) from None
                sums.add(metrics, [batch_size(batch)])
                done += 1
            if ended:
                if wanted is None and done > 0:
                    break
                raise self._val_exhausted(done, fresh)
        sums.fold()
        return sums

    def _val_exhausted(self, done: int, fresh: bool) -> DataExhaustedError:
        limit = self.cfg.val_num_batches
        wanted = "" if limit is None else f" of val_num_batches={limit}"
        where = f"in the validation after epoch {self.epoch + 1}/{self.cfg.num_epochs}"
        if fresh:
            return DataExhaustedError(
                f"val_data_iterator gave only {done}{wanted} batches {where}; "
                "lower val_num_batches or give it more data"
            )
        return DataExhaustedError(
            f"val_data_iterator ran dry: it gave {done}{wanted} batches {where}. It is an "
            "iterator, consumed across epochs; pass a zero-argument callable that returns a "
            "fresh iterator instead (val_data_iterator=lambda: make_val_batches()), or an "
            "iterator long enough for every validation"
        )

    # ---------------------------------------------------------------- checkpoints
    def _record(self, finished: bool) -> ResumeRecord:
        return ResumeRecord(
            step=self.global_step,
            epoch=self.epoch,
            position=self.position,
            finished=finished,
            history=self.history,
            metadata=dict(self.cfg.metadata or {}),
            num_batches=self.cfg.num_batches,
            steps_per_call=self._steps_per_call(),
            validations=self.validations,
            rng_key=KeyRecord.from_key(self.rng_key),
            partial=(self.sums.to_json() if self.position or self.sums.carry is not None else None),
            early_stopping=self.stopping,
            best=self.best,
            auto_choice=None if self.auto is None else self.auto.choice,
        )

    def _steps_per_call(self) -> int:
        """The K the epoch's calls use (with `auto` before its choice: 1, the trial's first)."""
        if self.auto is None:
            k = self.cfg.steps_per_call
            assert isinstance(k, int)
            return k
        return 1 if self.auto.choice is None else self.auto.choice.steps_per_call

    def _save(self, *, finished: bool, best: bool = False) -> Path:
        assert self.writer is not None
        record = self._record(finished)
        # Only a run resumed at the end of an epoch saves a step it already holds. Decided
        # from the loop's own state, never by listing the folder: with several processes,
        # process 0 may already be replacing the checkpoint while another one looks.
        replace = self.saved_step == self.global_step
        path = self.writer.save(
            self.global_step, _snapshot(self.state), record, best=best, replace=replace
        )
        self.saved_step = self.global_step
        return path

    def _interrupted(self, exc: BaseException) -> None:
        """Save the current step (unless the state is gone) and raise TrainingInterrupted."""
        if _is_deleted(self.state):
            raise exc  # the step that was interrupted had consumed its donated state
        self._raise_if_not_finite(self.sums.peek())
        reason = self.stop.reason or "KeyboardInterrupt"
        path: Path | None = None
        if self.writer is not None:
            if self.saved_step == self.global_step:
                path = self.writer.directory / f"checkpoint_{self.global_step}"
            else:
                path = self._save(finished=False)
            self.writer.wait()
        where = (
            f"global step {self.global_step} (epoch {self.epoch + 1}, step {self.position} "
            f"of {self.cfg.num_batches})"
            if self.position
            else f"global step {self.global_step} (the end of epoch {self.epoch})"
        )
        saved = f"checkpoint saved to {path}" if path else "no checkpoint_dir, nothing saved"
        raise TrainingInterrupted(
            f"training interrupted by {reason} at {where}; {saved}",
            checkpoint_path=path,
            step=self.global_step,
        ) from (exc if isinstance(exc, KeyboardInterrupt) else None)


def train_loop(
    state: StateT,
    train_step_fn: Callable[..., tuple[StateT, Mapping[str, Any]]],
    data_iterator_fn: Callable[..., Iterable[Any]],
    num_epochs: int,
    num_batches: int,
    rng_key: jax.Array,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    val_step_fn: Callable[..., tuple[Any, Mapping[str, Any]]] | None = None,
    val_data_iterator: Iterator[Any] | Callable[..., Iterable[Any]] | Iterable[Any] | None = None,
    val_num_batches: int | None = None,
    show_progress: bool = True,
    *,
    steps_per_call: StepsPerCall = 1,
    one_step_fn: Callable[..., tuple[StateT, Mapping[str, Any]]] | None = None,
    on_steps_per_call: Callable[[AutoChoice], None] | None = None,
    nan_mode: Literal["stop", "skip"] = "stop",
    resume: bool = False,
    keep: int = 3,
    best_metric: str | None = None,
    best_mode: Literal["min", "max"] = "min",
    early_stopping: EarlyStopping | None = None,
    val_every: int = 1,
    metadata: Mapping[str, str] | None = None,
    on_epoch_end: Callable[[int, History], None] | None = None,
    copy_state: bool = True,
) -> tuple[StateT, History]:
    """Train for `num_epochs` epochs of `num_batches` steps; returns the state and history.

    `train_step_fn(state, batch, rng_key) -> (new_state, metrics)` may donate its state:
    the loop works on a copy, so the caller's `state` stays valid (`copy_state=False`
    skips that copy, saving one state's memory: the caller gives `state` up, and a
    donating step deletes its buffers). Step `s` (counted over the whole run) gets
    `jax.random.fold_in(rng_key, s)`. `data_iterator_fn()` (or
    `data_iterator_fn(epoch=e)` when it takes `epoch`, 0-based) gives each epoch's batches;
    when it also takes `start`, a run resumed `p` steps into an epoch calls it with
    `start=p` and it must yield that epoch's batches from batch `p` on (else the loop
    replays the first `p` batches).

    `steps_per_call=K` runs K steps per call of `train_step_fn(state, batches, rng_keys)`
    (K stacked batches and keys), and the steps of an epoch that K leaves over one at a
    time with `one_step_fn(state, batch, rng_key)`. `steps_per_call="auto"` times K = 1
    (`one_step_fn`) against larger K on the run's first steps and keeps the fastest
    (`calls.py`); `on_steps_per_call(choice)` hears what it chose.
    `history["train_<m>"]` holds each epoch's mean of metric `m`, every batch weighted by
    its size (`skipped_steps` is a count); `history["val_<m>"]` one value per validation.

    `val_data_iterator` is an iterator (consumed across epochs), a zero-argument callable
    returning a fresh iterator per validation, or an iterable; `val_num_batches=None` runs
    each validation until the iterator ends. Checkpoints go to
    `checkpoint_dir/checkpoint_<global step>` every `checkpoint_every` epochs and at the
    end; `resume=True` continues from the latest complete one. See `docs/training.md`.

    Raises `NonFiniteLossError`, `DataExhaustedError`, or `TrainingInterrupted` (after
    saving a checkpoint) on SIGTERM or Ctrl-C; never exits the process.
    """
    options = LoopOptions(
        train_step_fn=train_step_fn,
        data_iterator_fn=data_iterator_fn,
        num_epochs=num_epochs,
        num_batches=num_batches,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        val_step_fn=val_step_fn,
        val_data_iterator=val_data_iterator,
        val_num_batches=val_num_batches,
        show_progress=show_progress,
        steps_per_call=steps_per_call,
        one_step_fn=one_step_fn,
        on_steps_per_call=on_steps_per_call,
        nan_mode=nan_mode,
        resume=resume,
        keep=keep,
        best_metric=best_metric,
        best_mode=best_mode,
        early_stopping=early_stopping,
        val_every=val_every,
        metadata=metadata,
        on_epoch_end=on_epoch_end,
        copy_state=copy_state,
    )
    run = _Run(options, state, rng_key)
    final_state, history = run.run()
    return final_state, history
