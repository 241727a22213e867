"""`run_spec`: compile a spec into its run folder, wire it up, train it, write the files.

`run_spec` never prints and never exits: it returns a `RunResult` (which
`beagle.runner.summary.print_summary` renders) or raises

- `beagle.spec.SpecError` for a spec that turns out unusable once its data and model are
  built (exit 2, problems at spec lines),
- `RunRefused` for a resume it will not make (exit 2),
- `beagle.training.NonFiniteLossError` or whatever a user's function raised (exit 1),
- `beagle.training.TrainingInterrupted` after SIGTERM or Ctrl-C saved a checkpoint (exit 3).

What the user should hear before training starts (resuming, nothing left to do) goes
through the `notify` callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from beagle import __version__
from beagle.runner.artifacts import (
    RunFolder,
    TensorBoardLog,
    higher_is_better,
    keep_previous,
    write_text_atomic,
)
from beagle.runner.distributed import ONE_PROCESS, Team
from beagle.runner.paths import checkpoint_dir as find_checkpoint_dir
from beagle.runner.paths import log_dir as find_log_dir
from beagle.runner.result import COUNT_SUFFIXES, Best, BestCheckpoint, RunResult, early_stop_reason
from beagle.spec import LoadedSpec, Problem, SpecError

if TYPE_CHECKING:
    import jax

    from beagle.runner.resume import ResumePlan
    from beagle.runner.trace import Wired
    from beagle.runner.wiring import DataPlan
    from beagle.training.calls import AutoChoice
    from beagle.training.history import History


class StepFunction(Protocol):
    """A generated `train_step` or `val_step`: `(state, batch, rng_key) -> (state, metrics)`.

    The state is a flax `TrainState` (beagle's, or flax's own when the spec names no batch
    statistics); the metrics are scalars, or `(steps_per_call,)` arrays of them.
    """

    def __call__(
        self, state: Any, batch: Mapping[str, Any], rng_key: jax.Array, /
    ) -> tuple[Any, Mapping[str, jax.Array]]: ...


class StepModule(Protocol):
    """What `beagle run` uses of the generated module it imported: its two steps."""

    train_step: StepFunction
    val_step: StepFunction


def _maximise(loaded: LoadedSpec, key: str) -> bool:
    """Whether a larger value of history key `key` is better."""
    from beagle import catalog

    spec = loaded.spec
    for best in (
        spec.checkpoint.best if spec.checkpoint else None,
        spec.early_stopping,
    ):
        if best is not None and best.metric == key:
            return best.mode == "max"
    base = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
    metric = spec.metrics.get(base)
    builtin = catalog.METRICS.get(metric.fn) if metric is not None else None
    if builtin is not None:
        return builtin.maximise
    if base in spec.losses or base == "loss":
        return False
    return higher_is_better(base)


def _final_and_best(
    loaded: LoadedSpec, history: History, val_every: int
) -> tuple[dict[str, float], dict[str, Best]]:
    final: dict[str, float] = {}
    best: dict[str, Best] = {}
    for key, values in history.items():
        if not values:
            continue
        final[key] = float(values[-1])
        if key.endswith(COUNT_SUFFIXES):  # counts of steps: no best
            continue
        finite = [(i, float(v)) for i, v in enumerate(values) if v == v and abs(v) != float("inf")]
        if not finite:
            continue
        pick = max if _maximise(loaded, key) else min
        index, value = pick(finite, key=lambda item: item[1])
        epoch = (index + 1) * val_every if key.startswith("val_") else index + 1
        best[key] = Best(value, epoch)
    return final, best


def _selection_metric(loaded: LoadedSpec, history: History) -> str | None:
    """The history key that picks the best checkpoint (see `BestCheckpoint`)."""
    spec = loaded.spec
    for named in (spec.checkpoint.best if spec.checkpoint else None, spec.early_stopping):
        if named is not None and named.metric in history:
            return named.metric
    for key in ("val_loss", "train_loss"):
        if key in history:
            return key
    return None


def _best_checkpoint(
    loaded: LoadedSpec,
    history: History,
    checkpoint_dir: Path | None,
    val_every: int,
) -> BestCheckpoint | None:
    """Which checkpoint left in `checkpoint_dir` holds the best model, and whether the
    history's best epoch has one (see `BestCheckpoint`)."""
    checkpoint = loaded.spec.checkpoint
    metric = _selection_metric(loaded, history)
    if checkpoint is None or checkpoint_dir is None or metric is None:
        return None
    from beagle.training import checkpoint_info
    from beagle.training.checkpoint import checkpoint_path, checkpoint_steps

    every = val_every if metric.startswith("val_") else 1
    values = {
        (index + 1) * every: float(value)
        for index, value in enumerate(history[metric])
        if math.isfinite(value)
    }
    if not values:
        return None
    pick = max if _maximise(loaded, metric) else min  # the first of equal values, like the loop
    best_epoch = pick(values, key=values.__getitem__)
    saved: dict[int, Path] = {}
    for step in checkpoint_steps(checkpoint_dir):
        info = checkpoint_info(checkpoint_path(checkpoint_dir, step))
        if info.position == 0:  # the end of an epoch, not an interrupted one
            saved.setdefault(info.epoch, Path(checkpoint_dir) / info.path.name)
    candidates = [epoch for epoch in values if epoch in saved]
    epoch = pick(candidates, key=values.__getitem__) if candidates else None
    unsaved = None
    if best_epoch not in saved:
        last = max((len(v) for k, v in history.items() if k.startswith("train_")), default=0)
        if best_epoch % checkpoint.every and best_epoch != last:
            unsaved = f"not a saved epoch (checkpoint.every: {checkpoint.every})"
        else:
            unsaved = (
                f"its checkpoint was removed (checkpoint.keep: {checkpoint.keep} keeps the "
                "latest; checkpoint.best keeps the best too)"
            )
    return BestCheckpoint(
        metric=metric,
        path=None if epoch is None else saved[epoch],
        epoch=epoch,
        value=None if epoch is None else values[epoch],
        best_epoch=best_epoch,
        best_value=values[best_epoch],
        unsaved=unsaved,
    )


def run_spec(
    loaded: LoadedSpec,
    *,
    restart: bool = False,
    progress: bool = False,
    notify: Callable[[str], None] = lambda message: None,
    team: Team = ONE_PROCESS,
) -> RunResult:
    """Train the spec `loaded` (overrides already applied) and write its run folder.

    `notify` receives the lines a user should see before training starts (resuming from a
    checkpoint, or a run that is already complete). With several processes (`team`, after
    `beagle.runner.distributed.initialize`) every process calls this: they agree on the
    checkpoint to resume from, process 0 alone writes the run folder and reports, and all
    of them train and take part in each checkpoint.
    """
    started = time.perf_counter()
    spec = loaded.spec
    if not team.writes:
        progress = False

        def notify(message: str) -> None:
            return None

    def maximise(key: str) -> bool:
        return _maximise(loaded, key)

    from beagle.runner import resume, trace, wiring
    from beagle.runner.cache import generated_module
    from beagle.training.history import copy_history

    wiring.ensure_cwd_on_path()
    module_text = generated_module(spec, loaded.source_name)
    module_hash = wiring.module_hash(module_text)
    log_dir = find_log_dir(loaded)
    val_every = spec.validation.every if spec.validation is not None else 1
    folder = RunFolder(log_dir, spec.name, val_every=val_every)
    checkpoint_dir = find_checkpoint_dir(loaded, log_dir)
    _check_output_paths(loaded, log_dir, checkpoint_dir)

    plan = resume.plan_resume(
        checkpoint_dir,
        restart=restart,
        module_hash=module_hash,
        spec_text=loaded.text,
        module_text=module_text,
        old_module=folder.module_file,
        epochs=spec.train.epochs,
        version=__version__,
    )
    resume.agree_on_plan(plan, team, checkpoint_dir)
    notes: list[str] = []
    files = {"run folder": folder.path}
    if plan.complete:
        assert plan.info is not None and plan.checkpoint is not None
        history = copy_history(plan.info.history)
        if team.writes:
            _create(loaded, folder)
            if not folder.history_file.is_file() or not folder.metrics_file.is_file():
                folder.write_history(history)
            if spec.log is None or spec.log.plot:
                if not folder.curves_file.is_file():
                    folder.write_curves(history, spec.name, maximise)
        epochs_done = plan.info.epoch
        stopped_early = plan.info.stopped_early
        if stopped_early:
            note = (
                f"{spec.name} is already complete: it {_early_stop(loaded, epochs_done)} "
                f"({plan.checkpoint}); nothing to train (--restart starts over)"
            )
        elif epochs_done > spec.train.epochs:
            note = (
                f"{spec.name} is already complete: {plan.checkpoint} has {epochs_done} "
                f"epochs, more than the spec's {spec.train.epochs}; nothing to train "
                "(--restart starts over, --set train.epochs=N with N above "
                f"{epochs_done} extends it)"
            )
        else:
            note = (
                f"{spec.name} is already complete: {plan.checkpoint} finished epoch "
                f"{epochs_done} of {spec.train.epochs}; nothing to train "
                "(--restart starts over, --set train.epochs=N extends it)"
            )
        notify(note)
        final, best = _final_and_best(loaded, history, val_every)
        files.update(_existing_files(folder, checkpoint_dir))
        return RunResult(
            status="already_complete",
            name=spec.name,
            run_dir=folder.path,
            history=history,
            final=final,
            best=best,
            wall_time_s=time.perf_counter() - started,
            train_time_s=0.0,
            steps=0,
            epochs=epochs_done,
            checkpoint_dir=checkpoint_dir,
            resumed_from=None,
            files=files,
            notes=[note],
            stopped_early=stopped_early,
            early_stopping_metric=_early_stopping_metric(loaded),
            best_checkpoint=_best_checkpoint(loaded, history, checkpoint_dir, val_every),
            process_index=team.index,
            process_count=team.count,
        )

    # Wire and trace before anything is written: an unusable spec leaves no run folder and
    # keeps its checkpoints, even with --restart. The module is the text written below; its
    # functions carry the run folder's file name, as if imported from there.
    module = wiring.import_module_from_text(
        module_text, f"_beagle_run_{spec.name}", str(folder.module_file)
    )
    counts = trace.parallel_counts(loaded, team.count)
    wired = trace.wire(loaded, module)
    if spec.init is not None and not plan.resuming:
        from beagle.runner.warm_start import warm_start

        wired.state, source = warm_start(loaded, wired.state)
        note = (
            f"{spec.name} starts from the params and BatchNorm statistics of {source} "
            "(init.from), with a fresh optimizer"
        )
        notes.append(note)
        notify(note)
    if team.count > 1:
        assert counts is not None
        trace.share_data(loaded, wired, counts)
    if counts is not None:
        notify(
            f"{spec.name}: parallel mesh data={counts[0]} x fsdp={counts[1]} "
            f"({counts[0] * counts[1]} devices); state placement: docs/scale-out.md"
        )

    if plan.resuming:
        assert plan.info is not None
        note = (
            f"resuming {spec.name} from {plan.checkpoint} (epoch {plan.info.epoch} of "
            f"{spec.train.epochs} done, global step {plan.info.step})"
        )
        notes.append(note)
        notify(note)
    elif team.writes:
        if restart:
            moved = keep_previous(folder, checkpoint_dir)
            if moved:
                note = f"restarting {spec.name}: moved " + " and ".join(moved)
                notes.append(note)
                notify(note)
        folder.clear_outputs()
    record: dict[str, Any] = {}  # run.json, which `auto`'s choice joins during training
    if team.writes:
        from beagle.runner.inference import run_record

        _create(loaded, folder)
        folder.write_sources(loaded.text, module_text)
        record = run_record(loaded, wired.data.sample, checkpoint_dir)
        folder.write_run_record(record)
        classes = getattr(wired.data.source, "classes", None)
        if classes is not None:  # the `images` source: label i is classes[i]
            write_text_atomic(folder.path / "classes.json", json.dumps(classes, indent=2) + "\n")
    team.barrier("beagle-run-folder-ready")  # the others start once process 0 has cleared
    start_step = plan.info.step if plan.resuming and plan.info is not None else 0
    start_epoch = plan.info.epoch if plan.resuming and plan.info is not None else 0

    tensorboard = (
        TensorBoardLog(folder.tensorboard_dir, val_every=val_every, resume_epoch=start_epoch)
        if spec.log is not None and spec.log.tensorboard and team.writes
        else None
    )
    latest: History = {}

    def on_epoch_end(epoch: int, history: History) -> None:
        latest.clear()
        latest.update(copy_history(history))
        if team.writes:
            folder.write_history(latest)
        if tensorboard is not None:
            tensorboard.log_epoch(epoch, latest)

    def on_steps_per_call(choice: AutoChoice) -> None:
        notify(f"{spec.name}: {choice.line()}")
        if team.writes:
            folder.write_run_record({**record, "steps_per_call": choice.to_json()})

    plot = (spec.log is None or spec.log.plot) and team.writes
    train_started = time.perf_counter()
    try:
        final_state, history = _train(
            loaded,
            wired,
            checkpoint_dir,
            plan,
            on_epoch_end,
            module_hash,
            progress,
            counts,
            on_steps_per_call,
        )
    except BaseException:
        # Interrupted or failed: the epochs done so far still get their picture.
        if latest and plot:
            folder.write_curves(latest, spec.name, maximise)
        raise
    finally:
        train_time = time.perf_counter() - train_started
        if tensorboard is not None:
            tensorboard.close()
    history = copy_history(history)
    if team.writes:
        folder.write_history(history)
    if plot:
        folder.write_curves(history, spec.name, maximise)
    final, best = _final_and_best(loaded, history, val_every)
    files.update(_existing_files(folder, checkpoint_dir))
    epochs = max((len(v) for k, v in history.items() if k.startswith("train_")), default=0)
    # train_loop returns early (without raising) only when early stopping ends the run
    stopped_early = spec.early_stopping is not None and epochs < spec.train.epochs
    if stopped_early:
        notes.append(f"{spec.name} {_early_stop(loaded, epochs)}")
    return RunResult(
        stopped_early=stopped_early,
        early_stopping_metric=_early_stopping_metric(loaded),
        status="done",
        name=spec.name,
        run_dir=folder.path,
        history=history,
        final=final,
        best=best,
        wall_time_s=time.perf_counter() - started,
        train_time_s=train_time,
        steps=int(final_state.step) - start_step,
        epochs=epochs,
        checkpoint_dir=checkpoint_dir,
        resumed_from=plan.checkpoint if plan.resuming else None,
        files=files,
        notes=notes,
        state=final_state,
        best_checkpoint=_best_checkpoint(loaded, history, checkpoint_dir, val_every),
        process_index=team.index,
        process_count=team.count,
        validation=_validation_coverage(wired.data),
    )


def _validation_coverage(data: DataPlan) -> str | None:
    """What one validation pass covers: the whole split, or the part `validation.batches`
    caps it to (`validation: 8 of 12 batches (validation.batches)`)."""
    if not data.validate or data.val_batches is None:
        return None
    from beagle.spec.problems import plural

    passes = plural(data.val_batches, "batch", "batches")
    known = data.source.val_batches
    if known is None:
        return f"{passes} (validation.batches; the source cannot tell its length)"
    if data.val_batches < known:
        return f"{data.val_batches} of {known} batches (validation.batches)"
    return f"{passes}: every validation example"


def _early_stopping_metric(loaded: LoadedSpec) -> str | None:
    stopping = loaded.spec.early_stopping
    return None if stopping is None else stopping.metric


def _early_stop(loaded: LoadedSpec, epoch: int) -> str:
    """`RunResult.stop_reason`, before there is a result."""
    return early_stop_reason(epoch, _early_stopping_metric(loaded))


def _blocking_file(path: Path) -> Path | None:
    """The file (not folder) at `path` or at one of its parents, if there is one."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def _check_output_paths(loaded: LoadedSpec, log_dir: Path, checkpoint_dir: Path | None) -> None:
    """`log.dir` and `checkpoint.dir` can be folders: no file stands in their way."""
    problems: list[Problem] = []
    for where, path in ((("log", "dir"), log_dir), (("checkpoint", "dir"), checkpoint_dir)):
        if path is None or (problems and path.is_relative_to(log_dir)):
            continue  # the default checkpoint.dir is inside log.dir, already reported
        blocking = _blocking_file(path)
        if blocking is None:
            continue
        what = "is a file" if blocking == path else f"is inside {blocking}, which is a file"
        problems.append(
            loaded.problem(
                where,
                f"{path} {what}, not a folder",
                f"set {'.'.join(where)} to a folder (it is created when missing)",
            )
        )
    if problems:
        raise SpecError(problems)


def _create(loaded: LoadedSpec, folder: RunFolder) -> None:
    """Create the run folder, or raise a `SpecError` at `log.dir` saying why it cannot be."""
    try:
        folder.create()
    except OSError as error:
        reason = error.strerror or str(error)
        raise SpecError(
            [
                loaded.problem(
                    ("log", "dir"),
                    f"cannot create the run folder {folder.path}: {reason}",
                    "set log.dir to a folder you can write to",
                )
            ]
        ) from None


def _existing_files(folder: RunFolder, checkpoint_dir: Path | None) -> dict[str, Path]:
    candidates = {
        "history": folder.history_file,
        "metrics": folder.metrics_file,
        "curves": folder.curves_file,
        "tensorboard": folder.tensorboard_dir,
        "checkpoints": checkpoint_dir,
    }
    return {what: path for what, path in candidates.items() if path is not None and path.exists()}


def _train(
    loaded: LoadedSpec,
    wired: Wired,
    checkpoint_dir: Path | None,
    plan: ResumePlan,
    on_epoch_end: Callable[[int, History], None],
    module_hash: str,
    progress: bool,
    counts: tuple[int, int] | None = None,
    on_steps_per_call: Callable[[AutoChoice], None] | None = None,
) -> tuple[Any, History]:
    """Call `train_loop` with everything the spec says (on a `data x fsdp` mesh with
    `counts`: the state placed on it, the steps wrapped to place each batch)."""
    from beagle.runner.resume import BEAGLE_VERSION, MODULE_HASH, SPEC_HASH, SPEC_TEXT
    from beagle.training import EarlyStopping, NonFiniteLossError, train_loop

    spec = loaded.spec
    data = wired.data
    steps: StepModule = wired.module
    options: dict[str, Any] = {}
    if checkpoint_dir is not None and spec.checkpoint is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        options.update(
            checkpoint_dir=str(checkpoint_dir),
            checkpoint_every=spec.checkpoint.every,
            keep=spec.checkpoint.keep,
            resume=plan.resuming,
            metadata={
                SPEC_HASH: loaded.hash,
                MODULE_HASH: module_hash,
                BEAGLE_VERSION: __version__,
                SPEC_TEXT: loaded.text,
            },
        )
        if spec.checkpoint.best is not None:
            options.update(
                best_metric=spec.checkpoint.best.metric, best_mode=spec.checkpoint.best.mode
            )
    validation = spec.validation if data.validate else None
    validating = validation is not None
    if validation is not None:
        options["val_every"] = validation.every
    if spec.early_stopping is not None:
        es = spec.early_stopping
        options["early_stopping"] = EarlyStopping(
            es.metric, es.mode, es.patience, min_delta=float(es.min_delta)
        )
    k = spec.train.steps_per_call
    one_step = getattr(wired.module, "train_one_step", None)  # K > 1 or auto: the single step
    if k != 1:
        options["steps_per_call"] = k
        options["one_step_fn"] = one_step
    if on_steps_per_call is not None:
        options["on_steps_per_call"] = on_steps_per_call
    if spec.train.nan != "stop":
        options["nan_mode"] = spec.train.nan
    state, train_step, val_step = wired.state, steps.train_step, steps.val_step
    if counts is not None:
        from beagle.training.sharding import make_placement

        placement, state = make_placement(state, data=counts[0], fsdp=counts[1])
        train_step = placement.wrap(train_step, axis=1 if k != 1 else 0)
        if one_step is not None:
            options["one_step_fn"] = placement.wrap(one_step)
        val_step = placement.wrap(val_step, donate=False)
    with _quiet_orbax_untracked_metric():
        try:
            return train_loop(
                state=state,
                train_step_fn=train_step,
                data_iterator_fn=data.source.train_iterator,
                num_epochs=spec.train.epochs,
                num_batches=data.batches_per_epoch,
                rng_key=wired.rng_key,
                val_step_fn=val_step if validating else None,
                val_data_iterator=data.source.val_iterator if validating else None,
                val_num_batches=data.val_batches if validating else None,
                show_progress=progress,
                on_epoch_end=on_epoch_end,
                copy_state=False,  # the runner owns the state: no copy of it (memory)
                **options,
            )
        except NonFiniteLossError as error:
            # With one loss term the step reports only `loss`: name the term it comes from.
            if len(spec.losses) == 1 and "loss" in error.names:
                (term,) = spec.losses
                names = [f"loss (loss term '{term}')" if n == "loss" else n for n in error.names]
                raise NonFiniteLossError(
                    epoch=error.epoch,
                    step=error.step,
                    step_in_epoch=error.step_in_epoch,
                    names=names,
                ) from None
            raise


class _DropUntrackedMetric(logging.Filter):
    """Drops orbax's `Requested tracked_metric; did not provide metrics.` warning.

    The best checkpoint follows a `val_` metric; with `validation.every` above 1, an epoch
    without validation saves a checkpoint without it, which is expected, not a problem.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


@contextlib.contextmanager
def _quiet_orbax_untracked_metric() -> Iterator[None]:
    logger = logging.getLogger("absl")
    drop = _DropUntrackedMetric()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)
