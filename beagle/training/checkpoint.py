"""Checkpoints on orbax: `checkpoint_dir/checkpoint_<global step>`, complete or absent.

Each checkpoint folder holds two orbax items: `state` (the whole `TrainState`: step,
params, optimizer state, batch statistics) and `record` (JSON: a `ResumeRecord`, see
`resume.py`: epoch and position in it, RNG key, history, on-device partial-epoch sums,
early-stopping and best-metric state, metadata). Orbax writes a folder under a temporary
name and renames it when complete, so a kill during a save leaves the previous
checkpoints usable; `latest_checkpoint` only sees completed folders.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import jax

from beagle.training.history import History
from beagle.training.resume import ResumeRecord

CHECKPOINT_PREFIX = "checkpoint"
_NAME = re.compile(rf"{CHECKPOINT_PREFIX}_(\d+)")
_STATE = "state"
_RECORD = "record"
_RECORD_FILE = "metadata"  # the file orbax's JsonCheckpointHandler writes the record to
_BEST_STEP = "best_step"  # the orbax metric of a checkpoint the loop marked as its best

StateT = TypeVar("StateT")


def _orbax() -> Any:
    """`orbax.checkpoint`, imported when a checkpoint is first read or written (it takes
    about 0.8 s to import; a run without checkpoints never needs it)."""
    import orbax.checkpoint as ocp

    return ocp


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's record says about the run that wrote it.

    `epoch` counts completed epochs and `position` the steps done in the next one, so
    `step` is the global step count; `finished` is true when the run that wrote it ended
    (all epochs, or early stopping).
    """

    path: Path
    step: int
    epoch: int
    position: int
    finished: bool
    metadata: dict[str, str]
    history: History
    stopped_early: bool = False  # early stopping ended the run
    best: dict[str, Any] | None = None


def checkpoint_path(checkpoint_dir: str | Path, step: int) -> Path:
    """`checkpoint_dir/checkpoint_<step>`."""
    return Path(checkpoint_dir) / f"{CHECKPOINT_PREFIX}_{step}"


def _is_complete(path: Path) -> bool:
    return (
        _NAME.fullmatch(path.name) is not None
        and path.is_dir()
        and (path / _STATE).is_dir()
        and (path / _RECORD / _RECORD_FILE).is_file()
    )


def checkpoint_steps(checkpoint_dir: str | Path) -> list[int]:
    """Global steps of the complete checkpoints in `checkpoint_dir`, ascending."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        match = _NAME.fullmatch(child.name)
        if match and _is_complete(child):
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `checkpoint_dir`, or None."""
    steps = checkpoint_steps(checkpoint_dir)
    return checkpoint_path(checkpoint_dir, steps[-1]) if steps else None


def read_record(path: str | Path) -> ResumeRecord:
    """The record of the checkpoint at `path`.

    Read as the JSON file it is, not through orbax: an orbax restore is a collective when
    several processes run, and a record is read by whichever process needs it (each one
    deciding whether to resume, before they agree).
    """
    path = Path(path)
    if not _is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete beagle checkpoint")
    text = (path / _RECORD / _RECORD_FILE).read_text(encoding="utf-8")
    return ResumeRecord.from_json(json.loads(text))


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Step, epoch, position, finished flag, metadata and history of a checkpoint."""
    record = read_record(path)
    return CheckpointInfo(
        path=Path(path),
        step=record.step,
        epoch=record.epoch,
        position=record.position,
        finished=record.finished,
        metadata=record.metadata,
        history=record.history,
        stopped_early=record.stopped_early,
        best=record.best,
    )


def _abstract(state: Any) -> Any:
    ocp = _orbax()
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if _is_complete(path):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"no complete checkpoint at {path}")
    return latest


def restore_checkpoint(path: str | Path, state: StateT) -> tuple[StateT, ResumeRecord]:
    """The state (with `state`'s structure, dtypes and shardings) and record at `path`."""
    ocp = _orbax()
    path = _resolve(path).absolute()
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    restored = checkpointer.restore(
        path,
        args=ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardRestore(_abstract(state)),
                _RECORD: ocp.args.JsonRestore(),
            }
        ),
    )
    return restored[_STATE], ResumeRecord.from_json(restored[_RECORD])


def load_checkpoint(path: str | Path, state: StateT) -> StateT:
    """Restore the `TrainState` saved at `path` into the structure of `state`.

    `path` is a checkpoint folder (`.../checkpoint_100`) or a checkpoint directory, in which
    case its latest complete checkpoint is loaded.
    """
    return restore_checkpoint(path, state)[0]


VARIABLES = ("params", "batch_stats")
"""The state fields inference needs: the model's variables, without optimizer state."""


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """The complete checkpoints of a checkpoint directory (see `checkpoints`)."""

    latest: Path | None  # the highest step
    best: Path | None  # the one `train_loop` recorded as its best (with `best_metric`)
    steps: list[int]  # every complete checkpoint's step, ascending


def checkpoints(checkpoint_dir: str | Path) -> Checkpoints:
    """The latest and the best checkpoint in `checkpoint_dir`, as paths, and all steps.

    `best` is the checkpoint the latest record names as the run's best (a run with
    `best_metric`), if it is still on disk; None otherwise.
    """
    steps = checkpoint_steps(checkpoint_dir)
    if not steps:
        return Checkpoints(None, None, [])
    latest = checkpoint_path(checkpoint_dir, steps[-1])
    recorded = read_record(latest).best
    best = None
    if recorded is not None and int(recorded["step"]) in steps:
        best = checkpoint_path(checkpoint_dir, int(recorded["step"]))
    return Checkpoints(latest, best, steps)


def load_variables(path: str | Path, target: Mapping[str, Any]) -> dict[str, Any]:
    """The model's variables (`params`, and `batch_stats` when `target` has them) saved in
    the checkpoint at `path` (a checkpoint, or a directory: its latest), without the
    optimizer state.

    `target` gives each leaf's shape, dtype and placement (arrays or
    `jax.ShapeDtypeStruct`s with a `sharding`), so a checkpoint written on any device
    layout restores onto the caller's: `model.init`'s variables, or
    `jax.eval_shape(model.init, ...)` with shardings, will do.
    """
    ocp = _orbax()
    path = _resolve(path).absolute()
    item = {key: target[key] for key in VARIABLES if key in target}
    if "params" not in item:
        raise ValueError("target must hold `params` (and `batch_stats` for BatchNorm)")
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    restored = checkpointer.restore(
        path,
        args=ocp.args.Composite(
            **{
                _STATE: ocp.args.PyTreeRestore(
                    item=item,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                    partial_restore=True,
                )
            }
        ),
    )
    return dict(restored[_STATE])


def save_checkpoint(
    state: Any,
    checkpoint_dir: str | Path,
    step: int,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save `state` to `checkpoint_dir/checkpoint_<step>` and wait until it is complete.

    An existing checkpoint of the same step is replaced. Returns the checkpoint's path.
    """
    record = ResumeRecord(
        step=int(step),
        epoch=0,
        position=0,
        finished=False,
        history={},
        metadata=dict(metadata or {}),
    )
    writer = CheckpointWriter(checkpoint_dir, keep=None, asynchronous=False)
    try:
        return writer.save(int(step), state, record, replace=True)
    finally:
        writer.close()


class CheckpointWriter:
    """Saves the loop's checkpoints through one orbax `CheckpointManager`.

    With `asynchronous=True` a save hands the state (host arrays, or a fresh on-device
    copy: nothing a step will donate) and the record to one background thread, which runs
    orbax's save there: the loop only waits when the previous save is still running (on
    one process; with several, saves run in the loop's thread). Orbax writes each
    checkpoint under a temporary name and renames it when complete. The manager keeps the
    newest `keep` checkpoints plus, with `keep_best`, the best one (orbax's `LatestN` and
    `BestN` preservation policies) and removes temporary folders a killed save left.

    Which checkpoint is the best is the loop's decision, not orbax's: the loop saves the
    checkpoint it records as its new best with `best=True`, and `BestN` keeps the newest
    of those (their metric is their step), so ties in the metric never disagree.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        *,
        keep: int | None = 3,
        keep_best: bool = False,
        asynchronous: bool = True,
    ) -> None:
        ocp = _orbax()
        self.directory = Path(checkpoint_dir).absolute()
        self.keep_best = keep_best
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        best_fn = None
        if keep_best:

            def best_fn(metrics: Mapping[str, float]) -> float:
                return float(metrics.get(_BEST_STEP, -1.0))

            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=False,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            step_prefix=CHECKPOINT_PREFIX,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=best_fn,
            best_mode="max",
            cleanup_tmp_directories=True,
            enable_async_checkpointing=False,  # the background thread is ours
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(_STATE, _RECORD)
        )
        # With several processes orbax's save runs collectives of its own (an allgather),
        # which must not interleave with the steps' collectives: there, saves run in the
        # loop's thread, between steps.
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="beagle-checkpoint")
            if asynchronous and jax.process_count() == 1
            else None
        )
        self._running: Future[None] | None = None

    def save(
        self,
        step: int,
        state: Any,
        record: ResumeRecord,
        *,
        best: bool = False,
        replace: bool = False,
    ) -> Path:
        """Start saving `state` and `record` as `checkpoint_<step>`; returns its path.

        `state` must not be donated or changed afterwards (pass a copy). The record is
        turned into JSON now, as the loop goes on appending to the history it holds.
        `best=True` marks the checkpoint as the run's best so far: kept beyond `keep` until
        a later one is marked.
        """
        snapshot = copy.deepcopy(record.to_json())
        metrics = {_BEST_STEP: float(step)} if best and self.keep_best else None
        self.wait()
        if self._executor is None:
            self._write(step, state, snapshot, metrics, replace)
        else:
            self._running = self._executor.submit(
                self._write, step, state, snapshot, metrics, replace
            )
        return checkpoint_path(self.directory, step)

    def _write(
        self,
        step: int,
        state: Any,
        record: dict[str, Any],
        metrics: dict[str, float] | None,
        replace: bool,
    ) -> None:
        ocp = _orbax()
        if replace and step in self._manager.all_steps():
            self._manager.delete(step)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardSave(state), _RECORD: ocp.args.JsonSave(record)}
            ),
            metrics=metrics,
            force=True,
        )

    def wait(self) -> None:
        """Block until every started save is complete on disk (re-raising its error)."""
        running, self._running = self._running, None
        if running is not None:
            running.result()

    def close(self) -> None:
        """Finish pending saves and release the threads."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._manager.close()
