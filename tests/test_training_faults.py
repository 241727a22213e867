"""Faults: non-finite losses, SIGTERM and Ctrl-C, kills, and exact resumption after them."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training_helpers import (
    data_fn,
    leaves_equal,
    make_state,
    probe_batches,
    probe_state,
    train_step,
    val_step,
)

from beagle.training import (
    NonFiniteLossError,
    TrainingInterrupted,
    TrainState,
    checkpoint_info,
    latest_checkpoint,
    load_checkpoint,
    train_loop,
)

KEY = jax.random.PRNGKey(0)
REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _train(
    directory: Path | None, data: Any = data_fn, val_data: Any = None, **options: Any
) -> tuple[TrainState, dict]:
    return train_loop(
        make_state(),
        train_step,
        data,
        3,
        10,
        KEY,
        checkpoint_dir=directory,
        val_step_fn=val_step,
        val_data_iterator=val_data or (lambda: data_fn(0)),
        val_num_batches=3,
        show_progress=False,
        **options,
    )


@pytest.fixture(scope="module")
def reference() -> tuple[TrainState, dict]:
    """An uninterrupted 3-epoch run: what every interrupted-and-resumed run must equal."""
    return _train(None)


def _interrupting(epoch_at: int, batch_at: int, action: Any) -> Any:
    """data_fn, but `action()` runs once, just before batch `batch_at` of `epoch_at`."""
    fired: list[bool] = []

    def data(epoch: int) -> Iterator[dict]:
        for index, batch in enumerate(data_fn(epoch)):
            if (epoch, index) == (epoch_at, batch_at) and not fired:
                fired.append(True)
                action()
            yield batch

    return data


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def test_non_finite_loss_names_epoch_step_and_metric_and_writes_nothing_after(
    tmp_path: Path,
) -> None:
    def poisoned(epoch: int) -> Iterator[dict]:
        for index, batch in enumerate(data_fn(epoch)):
            if (epoch, index) == (1, 3):
                batch = {**batch, "x": np.full_like(batch["x"], np.nan)}
            yield batch

    with pytest.raises(NonFiniteLossError) as raised:
        _train(tmp_path, data=poisoned)
    error = raised.value
    assert (error.epoch, error.step, error.step_in_epoch, error.names) == (2, 13, 3, ("loss",))
    assert "epoch 2, batch 4 of the epoch (global step 13" in str(error)
    assert "epoch 2" in str(error) and "step 13" in str(error) and "loss" in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_10"]
    restored = load_checkpoint(tmp_path / "checkpoint_10", make_state())
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(restored.params))


@functools.partial(jax.jit, donate_argnums=0)
def _three_term_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
    v = jnp.mean(batch["v"])
    return state, {"loss": v, "recon": v * 2, "kl": jnp.ones(())}


def test_non_finite_error_lists_every_term_that_was_not_finite() -> None:
    batches = probe_batches([[1.0], [2.0], [np.inf], [np.nan]])
    with pytest.raises(NonFiniteLossError) as raised:
        train_loop(
            probe_state(), _three_term_step, lambda: iter(batches), 1, 4, KEY, show_progress=False
        )
    assert raised.value.step == 2 and raised.value.names == ("loss", "recon")


@functools.partial(jax.jit, donate_argnums=0)
def _skipping_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
    v = jnp.mean(batch["v"])
    return state, {"loss": v, "skipped_steps": (v > 2.5).astype(jnp.int32)}  # finite, skipped


def test_a_step_that_skipped_itself_is_a_fault_under_stop_even_with_finite_metrics() -> None:
    # The step says it skipped (its guard saw something non-finite); nan_mode="stop" (the
    # default) stops at the first such step, naming skipped_steps, even if its metrics are
    # finite. Under "skip" the same steps are counted and left out of the means.
    batches = probe_batches([[1.0], [2.0], [3.0], [4.0]])
    with pytest.raises(NonFiniteLossError) as raised:
        train_loop(
            probe_state(), _skipping_step, lambda: iter(batches), 1, 4, KEY, show_progress=False
        )
    assert raised.value.step == 2 and raised.value.names == ("skipped_steps",)
    _, history = train_loop(
        probe_state(),
        _skipping_step,
        lambda: iter(batches),
        1,
        4,
        KEY,
        show_progress=False,
        nan_mode="skip",
    )
    assert history["train_skipped_steps"] == [2.0] and history["train_loss"] == [1.5]


@pytest.mark.parametrize(
    "interrupt",
    [lambda: os.kill(os.getpid(), signal.SIGTERM), _raise_keyboard_interrupt],
    ids=["sigterm", "keyboard_interrupt"],
)
def test_interrupt_saves_the_current_step_and_resume_matches_uninterrupted(
    tmp_path: Path, reference: tuple[TrainState, dict], interrupt: Any
) -> None:
    def previous_handler(signum: int, frame: Any) -> None:
        raise AssertionError("the loop's handler should have been in place")

    old = signal.signal(signal.SIGTERM, previous_handler)
    try:
        with pytest.raises(TrainingInterrupted) as raised:
            _train(tmp_path, data=_interrupting(1, 4, interrupt))
        assert signal.getsignal(signal.SIGTERM) is previous_handler  # restored
    finally:
        signal.signal(signal.SIGTERM, old)
    error = raised.value
    # SIGTERM arrives while batch 4 is being taken: that step still runs, then the loop
    # stops. A KeyboardInterrupt raised by the iterator stops before that batch.
    expected_step = 15 if error.__cause__ is None else 14
    assert error.step == expected_step
    assert error.checkpoint_path == tmp_path.absolute() / f"checkpoint_{expected_step}"
    info = checkpoint_info(error.checkpoint_path)
    assert (info.step, info.epoch, info.position, info.finished) == (
        expected_step,
        1,
        expected_step - 10,
        False,
    )
    assert latest_checkpoint(tmp_path) == error.checkpoint_path

    state, history = _train(tmp_path, resume=True)
    assert leaves_equal(state.params, reference[0].params)
    assert leaves_equal(state.opt_state, reference[0].opt_state)
    assert history == reference[1]


def test_interrupt_during_validation_resumes_exactly(
    tmp_path: Path, reference: tuple[TrainState, dict]
) -> None:
    calls: list[int] = []

    def val_data() -> Iterator[dict]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return data_fn(0)

    with pytest.raises(TrainingInterrupted) as raised:
        _train(tmp_path, val_data=val_data)
    assert raised.value.step == 20
    assert checkpoint_info(raised.value.checkpoint_path).position == 10  # type: ignore[arg-type]
    state, history = _train(tmp_path, resume=True)
    assert leaves_equal(state.params, reference[0].params)
    assert history == reference[1]


def test_interrupt_without_checkpoint_dir_still_raises_and_keeps_the_state() -> None:
    with pytest.raises(TrainingInterrupted) as raised:
        _train(None, data=_interrupting(0, 2, lambda: os.kill(os.getpid(), signal.SIGINT)))
    assert raised.value.checkpoint_path is None and raised.value.step == 3
    assert "SIGINT" in str(raised.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


KILLED_RUN = """
import os, signal, sys
sys.path[:0] = [{repo!r}, {tests!r}]
import jax
from test_training_helpers import data_fn, make_state, train_step, val_step
from beagle.training import train_loop

def data(epoch):
    for index, batch in enumerate(data_fn(epoch)):
        if (epoch, index) == (2, 5):
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no save: a real kill
        yield batch

train_loop(make_state(), train_step, data, 3, 10, jax.random.PRNGKey(0),
           checkpoint_dir=sys.argv[1], val_step_fn=val_step,
           val_data_iterator=lambda: data_fn(0), val_num_batches=3, show_progress=False)
"""


def test_resume_after_sigkill_matches_uninterrupted(
    tmp_path: Path, reference: tuple[TrainState, dict]
) -> None:
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN.format(repo=str(REPO), tests=str(TESTS))))
    directory = tmp_path / "checkpoints"
    run = subprocess.run(
        [sys.executable, str(script), str(directory)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    latest = latest_checkpoint(directory)
    # Epoch 2's save is asynchronous: the kill may come before it is complete.
    assert latest is not None and latest.name in ("checkpoint_10", "checkpoint_20")
    state, history = _train(directory, resume=True)
    assert leaves_equal(state.params, reference[0].params)
    assert history == reference[1]


def test_resume_inside_a_partly_folded_epoch_restores_the_exact_sums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import beagle.training.loop as loop_module

    # Folds every 4 steps: stopping at step 7 of an epoch leaves 4 steps folded into the
    # on-device sums and 3 pending; both must come back bit for bit.
    monkeypatch.setattr(loop_module, "CHUNK_STEPS", 4)
    reference_state, reference_history = _train(None)
    with pytest.raises(TrainingInterrupted) as raised:
        _train(tmp_path, data=_interrupting(1, 7, _raise_keyboard_interrupt))
    assert raised.value.step == 17
    state, history = _train(tmp_path, resume=True)
    assert leaves_equal(state.params, reference_state.params)
    assert history == reference_history


def test_interrupt_after_a_non_finite_step_raises_the_loss_error_and_saves_nothing(
    tmp_path: Path,
) -> None:
    def poisoned_then_interrupted(epoch: int) -> Iterator[dict]:
        for index, batch in enumerate(data_fn(epoch)):
            if index == 2:
                batch = {**batch, "x": np.full_like(batch["x"], np.inf)}
            if index == 5:
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(NonFiniteLossError) as raised:
        _train(tmp_path, data=poisoned_then_interrupted)
    assert (raised.value.epoch, raised.value.step) == (1, 2)
    assert latest_checkpoint(tmp_path) is None


def test_a_stop_requested_during_the_last_epochs_end_is_not_swallowed(tmp_path: Path) -> None:
    def on_epoch_end(epoch: int, history: dict) -> None:
        if epoch == 3:  # the last epoch: its checkpoint is already being saved
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM") as raised:
        _train(tmp_path, on_epoch_end=on_epoch_end)
    error = raised.value
    assert error.step == 30
    assert error.checkpoint_path == tmp_path.absolute() / "checkpoint_30"
    info = checkpoint_info(error.checkpoint_path)
    assert (info.step, info.epoch, info.finished) == (30, 3, True)  # saved before raising


BLOCKED_RUN = """
import os, signal, sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
import jax
from test_training_helpers import data_fn, make_state, train_step
from beagle.training import TrainingInterrupted, train_loop

def data(epoch):
    for index, batch in enumerate(data_fn(epoch)):
        if index == 3:
            print("blocking", flush=True)
            for _ in range(300):  # 30 s, unless a signal raises
                time.sleep(0.1)
        yield batch

try:
    train_loop(make_state(), train_step, data, 2, 10, jax.random.PRNGKey(0),
               checkpoint_dir=sys.argv[1], show_progress=False)
except KeyboardInterrupt as exc:
    print("KeyboardInterrupt", exc, flush=True)
except TrainingInterrupted as exc:
    print("TrainingInterrupted", exc, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_second_signal_raises_keyboard_interrupt_at_once_without_saving(
    tmp_path: Path, signum: int
) -> None:
    script = tmp_path / "blocked_run.py"
    script.write_text(textwrap.dedent(BLOCKED_RUN.format(repo=str(REPO), tests=str(TESTS))))
    directory = tmp_path / "checkpoints"
    child = subprocess.Popen(
        [sys.executable, str(script), str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line)
            if line.startswith("blocking"):
                break
        started = time.monotonic()
        child.send_signal(signum)
        time.sleep(0.5)  # the first one is handled (the data iterator sleeps in 0.1 s steps)
        child.send_signal(signum)
        output, _ = child.communicate(timeout=20)
    finally:
        child.kill()
    assert time.monotonic() - started < 10  # not after the 30 s the iterator blocks
    assert child.returncode == 0, "".join(lines) + output
    assert output.startswith("KeyboardInterrupt"), output
    assert "without saving" in output
    assert latest_checkpoint(directory) is None
