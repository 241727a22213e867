"""`steps_per_call`: calls of K steps, an epoch's remainder one step at a time, and `auto`.

The call plans and `auto`'s decision rule are tested as plain functions (the decision with
made-up timings: that is the rule itself); everything else trains for real and is compared
with single steps: the same batches and keys, so the same parameters and history.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_training_helpers import leaves_equal, make_state, probe_batches, train_step

from beagle.training import TrainingInterrupted, train_loop
from beagle.training.calls import (
    AutoChoice,
    AutoTrial,
    Calls,
    calls_from,
    choose,
    epoch_calls,
)
from beagle.training.checkpoint import latest_checkpoint, read_record

KEY = jax.random.PRNGKey(0)


@functools.partial(jax.jit, donate_argnums=0)
def scan_step(state: Any, batches: dict, rng_keys: jax.Array) -> tuple[Any, dict]:
    """`train_step` over stacked batches and keys, as a generated module's `train_step`."""
    return jax.lax.scan(lambda carry, xs: train_step(carry, *xs), state, (batches, rng_keys))


class Counting:
    """A step that counts its calls (and the leading length of each batch it got)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.lengths: list[int] = []

    def __call__(self, state: Any, batch: dict, rng_key: jax.Array) -> Any:
        self.lengths.append(int(np.shape(batch["x"])[0]))
        return self.fn(state, batch, rng_key)


def _batches(count: int) -> list[dict]:
    rs = np.random.RandomState(5)
    x = rs.randn(count, 8, 4).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)).astype(np.float32)
    return [{"x": x[i], "y": y[i]} for i in range(count)]


def _raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _interrupting(
    batches: list[dict], epoch_at: int, batch_at: int, action: Any = _raise_keyboard_interrupt
) -> Any:
    """The batches, but `action()` (a KeyboardInterrupt) just before batch `batch_at` of
    `epoch_at`."""
    fired: list[bool] = []

    def data(epoch: int) -> Any:
        for index, batch in enumerate(batches):
            if (epoch, index) == (epoch_at, batch_at) and not fired:
                fired.append(True)
                action()
            yield batch

    return data


def _assert_same_training(a: tuple[Any, dict], b: tuple[Any, dict]) -> None:
    """Params within 1e-6 and the same history (up to the float32 rounding of summing the
    epoch's metrics in other groups)."""
    for x, y in zip(jax.tree.leaves(a[0].params), jax.tree.leaves(b[0].params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
    assert set(a[1]) == set(b[1])
    for key, values in a[1].items():
        np.testing.assert_allclose(b[1][key], values, rtol=1e-6, atol=0)


# --- plans and the decision rule ------------------------------------------------------


def test_an_epoch_is_the_calls_of_k_that_fit_then_single_steps() -> None:
    assert epoch_calls(4, 10) == [Calls(4, 0, 2), Calls(1, 8, 2)]
    assert epoch_calls(4, 8) == [Calls(4, 0, 2)]
    assert epoch_calls(8, 300, start=137) == [Calls(8, 137, 20), Calls(1, 297, 3)]
    assert epoch_calls(1, 5) == [Calls(1, 0, 5)]


def test_a_resumed_epoch_takes_its_plan_up_where_it_stopped() -> None:
    plan = epoch_calls(4, 10)
    assert calls_from(plan, 0) == plan
    assert calls_from(plan, 4) == [Calls(4, 0, 2, first=1), Calls(1, 8, 2)]
    assert calls_from(plan, 9) == [Calls(1, 8, 2, first=1)]
    # Inside a call (a checkpoint written with another K): single steps to the next call.
    assert calls_from(plan, 5) == [Calls(1, 5, 3), Calls(1, 8, 2)]
    assert calls_from(plan, 1) == [Calls(1, 1, 3), Calls(4, 0, 2, first=1), Calls(1, 8, 2)]
    assert calls_from(plan, 10) == []


@pytest.mark.parametrize(
    ("timings", "chosen"),
    [
        ({1: 100.0, 8: 104.0}, 1),  # 4 % faster is not enough
        ({1: 100.0, 8: 105.0}, 8),
        ({1: 100.0, 8: 90.0}, 1),
        ({1: 100.0, 8: 200.0, 32: 300.0}, 32),
        ({1: 100.0, 8: 200.0, 32: 150.0}, 8),
    ],
)
def test_a_larger_k_is_kept_only_when_it_beats_single_steps_by_five_percent(
    timings: dict[int, float], chosen: int
) -> None:
    k, reason = choose(timings)
    assert k == chosen
    assert f"{timings[1]:,.0f} steps/s" in reason


def _drive(trial: AutoTrial, epoch: int, position: int, rates: dict[int, float]) -> list[Calls]:
    """Run `trial.runs` as the loop does, reporting each timed run at `rates` steps/s."""
    runs = []
    for calls in trial.runs(epoch, position):
        runs.append(calls)
        if calls.timed:
            trial.timed(
                calls, (calls.count - 1) * calls.steps_per_call / rates[calls.steps_per_call]
            )
    return runs


def test_auto_tries_32_only_after_8_won_and_where_the_epoch_holds_it() -> None:
    winning = AutoTrial(300, None)
    runs = _drive(winning, 0, 0, {1: 1000.0, 8: 2000.0, 32: 4000.0})
    assert [(c.steps_per_call, c.count, c.timed) for c in runs[:3]] == [
        (1, 65, True),  # a call that compiles, then 64 timed steps
        (8, 9, True),
        (32, 3, True),
    ]
    assert runs[3:] == epoch_calls(32, 300, start=233)
    assert winning.choice is not None and winning.choice.steps_per_call == 32
    assert (winning.choice.epoch, winning.choice.position) == (0, 233)
    assert set(winning.choice.steps_per_second) == {1, 8, 32}

    losing = AutoTrial(300, None)
    runs = _drive(losing, 0, 0, {1: 1000.0, 8: 500.0})
    assert [c.steps_per_call for c in runs if c.timed] == [1, 8]
    assert runs[2:] == epoch_calls(1, 300, start=137)
    assert losing.choice is not None and losing.choice.steps_per_call == 1

    short = AutoTrial(200, None)  # room for 1 and 8 (137 steps), not for 32 (233)
    _drive(short, 0, 0, {1: 1000.0, 8: 2000.0, 32: 4000.0})
    assert short.choice is not None and set(short.choice.steps_per_second) == {1, 8}
    assert short.choice.steps_per_call == 8 and "K = 32 not tried" in short.choice.line()
    assert "not tried" not in (losing.choice.reason + winning.choice.reason)


def test_auto_tries_no_larger_k_when_a_single_step_is_long() -> None:
    """A 10 ms step (a CNN on a CPU) is bound by its computation: the trial stops after
    K = 1, without compiling or timing a scanned step, and the epoch goes on at K = 1."""
    trial = AutoTrial(300, None)
    runs = _drive(trial, 0, 0, {1: 100.0, 8: 2000.0})
    assert [c.steps_per_call for c in runs if c.timed] == [1]
    assert runs[1:] == epoch_calls(1, 300, start=65)
    assert trial.choice is not None and trial.choice.steps_per_call == 1
    assert set(trial.choice.steps_per_second) == {1}
    assert "10.0 ms" in trial.choice.line() and "no larger K was tried" in trial.choice.line()


def test_auto_on_a_short_epoch_uses_single_steps_and_says_so() -> None:
    trial = AutoTrial(100, None)
    assert trial.choice is not None and trial.choice.steps_per_call == 1
    assert "too short for the trial" in trial.choice.line()
    assert list(trial.runs(0, 0)) == [Calls(1, 0, 100)]


def test_auto_resumed_keeps_its_choice_and_resumed_before_it_tries_where_there_is_room() -> None:
    choice = AutoChoice(8, {1: 1.0, 8: 2.0}, epoch=0, position=137, reason="r")
    kept = AutoTrial(300, choice)
    assert list(kept.runs(0, 153)) == calls_from(epoch_calls(8, 300, start=137), 153)
    assert list(kept.runs(1, 0)) == epoch_calls(8, 300)
    assert kept.choice is choice
    late = AutoTrial(300, None)  # stopped during the trial, 200 steps into the epoch
    assert list(late.runs(0, 200)) == [Calls(1, 200, 100)]
    assert late.choice is None
    assert next(late.runs(1, 0)).timed  # the trial, at the next epoch's start


# --- real training --------------------------------------------------------------------


@pytest.fixture(scope="module")
def remainder_run() -> tuple[Any, Counting, Counting]:
    """Two epochs of 10 batches at K = 4 (the steps counted): two calls, then two steps."""
    batches = _batches(10)
    single = Counting(train_step)
    scanned = Counting(scan_step)
    fused = train_loop(
        make_state(),
        scanned,
        lambda: iter(batches),
        2,
        10,
        KEY,
        show_progress=False,
        steps_per_call=4,
        one_step_fn=single,
    )
    return fused, scanned, single


def test_an_epoch_k_does_not_divide_runs_its_remainder_as_single_steps_and_equals_k1(
    remainder_run: tuple[Any, Counting, Counting],
) -> None:
    fused, scanned, single = remainder_run
    assert scanned.lengths == [4, 4] * 2 and single.lengths == [8, 8] * 2
    batches = _batches(10)
    plain = train_loop(
        make_state(), train_step, lambda: iter(batches), 2, 10, KEY, show_progress=False
    )
    _assert_same_training(fused, plain)
    with pytest.raises(ValueError, match="pass one_step_fn"):
        train_loop(make_state(), scan_step, lambda: iter(batches), 1, 10, KEY, steps_per_call=4)


@pytest.mark.parametrize(
    ("batch_at", "action", "stopped_at"),
    [
        # stops before batch 9: inside the single steps 8 and 9
        (9, _raise_keyboard_interrupt, 9),
        # arrives while the call of batches 4..7 gathers them: it runs, then the loop stops
        # at 8 with that call's metrics not yet folded, where the single steps begin
        (7, lambda: os.kill(os.getpid(), signal.SIGTERM), 8),
    ],
    ids=["inside_the_remainder", "where_the_remainder_begins"],
)
def test_resume_inside_the_remainder_matches_the_uninterrupted_run(
    tmp_path: Path,
    remainder_run: tuple[Any, Counting, Counting],
    batch_at: int,
    action: Any,
    stopped_at: int,
) -> None:
    batches = _batches(10)
    whole = remainder_run[0]
    options: dict[str, Any] = dict(show_progress=False, steps_per_call=4, one_step_fn=train_step)
    with pytest.raises(TrainingInterrupted) as raised:
        train_loop(
            make_state(),
            scan_step,
            _interrupting(batches, 1, batch_at, action),
            2,
            10,
            KEY,
            checkpoint_dir=tmp_path,
            **options,
        )
    assert raised.value.step == 10 + stopped_at
    resumed = train_loop(
        make_state(),
        scan_step,
        lambda epoch: iter(batches),
        2,
        10,
        KEY,
        checkpoint_dir=tmp_path,
        resume=True,
        **options,
    )
    assert leaves_equal(resumed[0].params, whole[0].params)
    assert resumed[1] == whole[1]


def test_auto_chooses_records_resumes_keeping_its_choice_and_equals_k1(tmp_path: Path) -> None:
    batches = _batches(150)  # room for the trial of 1 and 8 (137 steps), not for 32
    chosen: list[AutoChoice] = []
    single = Counting(train_step)
    scanned = Counting(scan_step)
    options: dict[str, Any] = dict(
        show_progress=False,
        steps_per_call="auto",
        checkpoint_dir=tmp_path,
        on_steps_per_call=chosen.append,
    )
    with pytest.raises(TrainingInterrupted):
        train_loop(
            make_state(),
            scanned,
            _interrupting(batches, 1, 20),
            2,
            150,
            KEY,
            one_step_fn=single,
            **options,
        )
    (choice,) = chosen
    assert set(choice.steps_per_second) == {1, 8} and choice.steps_per_call in (1, 8)
    assert (choice.epoch, choice.position) == (0, 137)
    # The trial's 65 + 9 calls, then the rest of the epochs in the chosen calls.
    trial_calls = [8] * 9
    if choice.steps_per_call == 8:
        assert scanned.lengths == trial_calls + [8] + [8] * 2  # 137..145; 0..16 of epoch 2
        assert len(single.lengths) == 65 + 5  # the trial's, then 145..150
    else:
        assert scanned.lengths == trial_calls
        assert len(single.lengths) == 65 + 13 + 20
    record = read_record(latest_checkpoint(tmp_path) or tmp_path)
    assert record.auto_choice == choice and record.steps_per_call == choice.steps_per_call

    resumed = train_loop(
        make_state(),
        scan_step,
        lambda epoch: iter(batches),
        2,
        150,
        KEY,
        one_step_fn=train_step,
        resume=True,
        **options,
    )
    assert chosen == [choice, choice]  # the same timings: no new trial
    plain = train_loop(
        make_state(), train_step, lambda: iter(batches), 2, 150, KEY, show_progress=False
    )
    _assert_same_training(resumed, plain)


def test_auto_needs_the_single_step() -> None:
    with pytest.raises(ValueError, match="one_step_fn"):
        train_loop(
            make_state(), scan_step, lambda: iter(_batches(4)), 1, 4, KEY, steps_per_call="auto"
        )


# --- from a spec ----------------------------------------------------------------------

W0_LIKE = """\
version: 1
name: w0
seed: 1
model:
  class: beagle.models:MLP
  args: {{features: [1]}}
data:
  source: synthetic
  task: regression
  examples: 65536
  features: 8
  batch_size: 32
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: {epochs}, batches_per_epoch: 1638, steps_per_call: {k}}}
checkpoint: {{every: 1}}
log: {{dir: {folder}/runs/{name}, plot: false}}
"""


def _run_w0(folder: Path, name: str, k: str, epochs: int = 2) -> tuple[Any, list[str]]:
    from beagle.runner import run_spec
    from beagle.spec import load_spec

    path = folder / f"{name}.yaml"
    path.write_text(W0_LIKE.format(epochs=2, k=k, name=name, folder=folder))
    told: list[str] = []
    loaded = load_spec(path, [f"train.epochs={epochs}"], imports="import")
    return run_spec(loaded, restart=False, progress=False, notify=told.append), told


@pytest.fixture(scope="module")
def w0_single(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two epochs of 1,638 batches at K = 1: what the other K must equal."""
    return _run_w0(tmp_path_factory.mktemp("w0"), "single", "1")[0]


def _same_run(a: Any, b: Any) -> None:
    _assert_same_training((a.state, a.history), (b.state, b.history))


def test_k4_runs_an_epoch_of_1638_batches_and_equals_k1(tmp_path: Path, w0_single: Any) -> None:
    four, _ = _run_w0(tmp_path, "four", "4")
    assert four.status == "done" and four.steps == 2 * 1638
    _same_run(four, w0_single)


def test_auto_from_a_spec_prints_records_and_keeps_its_choice_and_equals_k1(
    in_tmp: Path, w0_single: Any
) -> None:
    first, told = _run_w0(in_tmp, "auto", "auto", epochs=1)
    (line,) = [line for line in told if "steps_per_call" in line]
    assert line.startswith("w0: steps_per_call: auto chose ")
    recorded = json.loads((in_tmp / "runs" / "auto" / "run.json").read_text())["steps_per_call"]
    choice = AutoChoice.from_json(recorded)
    assert set(choice.steps_per_second) == {1, 8, 32} or set(choice.steps_per_second) == {1, 8}
    assert line == f"w0: {choice.line()}"
    checkpoint = latest_checkpoint(in_tmp / "runs" / "auto" / "checkpoints")
    assert checkpoint is not None and read_record(checkpoint).auto_choice == choice

    extended, told_again = _run_w0(in_tmp, "auto", "auto", epochs=2)
    assert extended.resumed_from is not None
    assert f"w0: {choice.line()}" in told_again  # the same timings: no new trial
    again = json.loads((in_tmp / "runs" / "auto" / "run.json").read_text())["steps_per_call"]
    assert again == recorded
    _same_run(extended, w0_single)


def _work(x: jax.Array) -> jax.Array:
    """A few milliseconds of device work, which a call only dispatches."""
    return jax.lax.fori_loop(0, 8, lambda i, y: jnp.tanh(y @ y) / 128.0, x)


@functools.partial(jax.jit, donate_argnums=0)
def _slow_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
    x = _work(state["x"] + jnp.mean(batch["v"]))
    return {"x": x}, {"value": jnp.mean(x)}


@functools.partial(jax.jit, donate_argnums=0)
def _slow_scan(state: dict, batches: dict, rng_keys: jax.Array) -> tuple[dict, dict]:
    return jax.lax.scan(lambda carry, xs: _slow_step(carry, *xs), state, (batches, rng_keys))


def test_the_trial_clock_waits_for_the_work_it_times() -> None:
    """A clock read before the steps' results are ready would see only their dispatch:
    rates far above what one step's work allows."""
    state = {"x": jnp.ones((192, 192), jnp.float32)}
    batch = {"v": np.ones(1, np.float32)}
    probe = jax.tree.map(jnp.copy, state)
    probe, _ = _slow_step(probe, batch, KEY)
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        probe, _ = jax.block_until_ready(_slow_step(probe, batch, KEY))
        seconds.append(time.perf_counter() - started)
    step_seconds = min(seconds)
    batches = probe_batches([[float(i)] for i in range(140)])
    chosen: list[AutoChoice] = []
    train_loop(
        state,
        _slow_scan,
        lambda: iter(batches),
        1,
        140,
        KEY,
        show_progress=False,
        steps_per_call="auto",
        one_step_fn=_slow_step,
        on_steps_per_call=chosen.append,
    )
    (choice,) = chosen
    assert set(choice.steps_per_second) == {1, 8}
    assert all(rate <= 3 / step_seconds for rate in choice.steps_per_second.values()), (
        choice,
        step_seconds,
    )
