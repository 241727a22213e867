"""train_loop's per-step behaviour: metrics on the device, weighting, keys, fused calls,
validation sources, early stopping and progress output."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console
from test_training_helpers import (
    data_fn,
    leaves_equal,
    make_state,
    probe_batches,
    probe_state,
    probe_step,
    probe_val_step,
    train_step,
    val_step,
)

import beagle.training.metrics as metrics_module
from beagle.training import (
    DataExhaustedError,
    EarlyStopping,
    checkpoint_info,
    latest_checkpoint,
    train_loop,
)
from beagle.training.progress import EpochProgress

KEY = jax.random.PRNGKey(0)


def test_epoch_runs_without_any_host_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    fetches: list[Any] = []
    real_fetch = metrics_module.fetch_to_host

    def counting_fetch(tree: Any) -> Any:
        fetches.append(tree)
        return real_fetch(tree)

    monkeypatch.setattr(metrics_module, "fetch_to_host", counting_fetch)
    # Any implicit device-to-host read (float(), np.asarray, a Python `if` on an array)
    # raises under this guard; the loop's one explicit read per epoch does not.
    with jax.transfer_guard_device_to_host("disallow"):
        _, history = train_loop(make_state(), train_step, data_fn, 3, 10, KEY, show_progress=False)
    assert len(history["train_loss"]) == 3
    assert len(fetches) == 3  # one read of the epoch sums per epoch, none per step


def test_epoch_mean_weights_batches_by_size() -> None:
    values = [[1.0] * 8, [2.0] * 8, [10.0] * 2]  # a short last batch must not skew the mean
    batches = probe_batches(values)
    _, history = train_loop(
        probe_state(), probe_step, lambda: iter(batches), 1, 3, KEY, show_progress=False
    )
    expected = (8 * 1.0 + 8 * 2.0 + 2 * 10.0) / 18
    assert history["train_value"] == [pytest.approx(expected, rel=1e-6)]
    assert history["train_value"][0] != pytest.approx((1.0 + 2.0 + 10.0) / 3)


def test_epoch_mean_over_many_chunks_is_exact_enough() -> None:
    rs = np.random.RandomState(3)
    values = [list(rs.rand(4)) for _ in range(600)]  # spans three folds of 256 steps
    batches = probe_batches(values)
    _, history = train_loop(
        probe_state(), probe_step, lambda: iter(batches), 1, 600, KEY, show_progress=False
    )
    assert history["train_value"][0] == pytest.approx(float(np.mean(values)), rel=1e-5)


@functools.partial(jax.jit, donate_argnums=0)
def _guarded_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
    value = jnp.mean(batch["v"])
    bad = ~jnp.isfinite(value)
    return {"calls": state["calls"] + jnp.where(bad, 0, 1)}, {
        "value": value,
        "skipped_steps": bad.astype(jnp.int32),
    }


def test_skip_mode_counts_skipped_steps_and_leaves_them_out_of_means() -> None:
    epochs = [
        [[1.0] * 4, [np.nan] * 4, [3.0] * 4, [np.inf] * 4],
        [[2.0] * 4, [2.0] * 4, [4.0] * 4, [np.nan] * 4],
    ]
    state, history = train_loop(
        probe_state(),
        _guarded_step,
        lambda epoch: iter(probe_batches(epochs[epoch])),
        2,
        4,
        KEY,
        show_progress=False,
        nan_mode="skip",
    )
    assert history["train_skipped_steps"] == [2.0, 1.0]
    assert history["train_value"] == [pytest.approx(2.0), pytest.approx(8.0 / 3.0)]
    assert int(state["calls"]) == 5


def _recording_step(seen: list[Any]) -> Any:
    def step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
        seen.append(rng_key)
        return state, {"value": jnp.mean(batch["v"], axis=-1)}

    return step


@pytest.mark.parametrize("make_key", [jax.random.PRNGKey, jax.random.key])
def test_step_s_gets_fold_in_of_rng_key_and_s(make_key: Any) -> None:
    rng_key = make_key(5)
    seen: list[Any] = []
    batches = probe_batches([[float(i)] * 2 for i in range(6)])
    train_loop(
        probe_state(),
        _recording_step(seen),
        lambda: iter(batches),
        2,
        6,
        rng_key,
        show_progress=False,
    )
    expected = [jax.random.fold_in(rng_key, s) for s in range(12)]
    data = (
        jax.random.key_data if jax.dtypes.issubdtype(rng_key.dtype, jax.dtypes.prng_key) else None
    )
    assert len(seen) == 12
    for got, want in zip(seen, expected, strict=True):
        if data is not None:
            got, want = data(got), data(want)
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_steps_per_call_stacks_batches_and_keys_and_matches_single_steps() -> None:
    rs = np.random.RandomState(0)
    values = [list(rs.rand(3)) for _ in range(8)]
    batches = probe_batches(values)
    seen: list[Any] = []
    _, fused = train_loop(
        probe_state(),
        _recording_step(seen),
        lambda: iter(batches),
        2,
        8,
        KEY,
        show_progress=False,
        steps_per_call=4,
    )
    _, single = train_loop(
        probe_state(), probe_step, lambda: iter(batches), 2, 8, KEY, show_progress=False
    )
    assert fused["train_value"] == pytest.approx(single["train_value"], rel=1e-6)
    assert len(seen) == 4 and seen[0].shape == (4, 2)
    keys = np.concatenate([np.asarray(k) for k in seen])
    expected = np.stack([np.asarray(jax.random.fold_in(KEY, s)) for s in range(16)])
    assert np.array_equal(keys, expected)
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        train_loop(probe_state(), probe_step, lambda: iter(batches), 1, 6, KEY, steps_per_call=4)


def test_fused_training_ends_with_the_params_of_single_steps() -> None:
    @functools.partial(jax.jit, donate_argnums=0)
    def fused_step(state: Any, stacked: dict, keys: jax.Array) -> tuple[Any, dict]:
        def body(s: Any, xs: tuple[dict, jax.Array]) -> tuple[Any, jax.Array]:
            new_s, m = train_step.__wrapped__(s, xs[0], xs[1])
            return new_s, m["loss"]

        state, losses = jax.lax.scan(body, state, (stacked, keys))
        return state, {"loss": losses}

    single_state, single = train_loop(
        make_state(), train_step, data_fn, 2, 10, KEY, show_progress=False
    )
    fused_state, fused = train_loop(
        make_state(), fused_step, data_fn, 2, 10, KEY, show_progress=False, steps_per_call=5
    )
    for fused_leaf, single_leaf in zip(
        jax.tree_util.tree_leaves(fused_state.params),
        jax.tree_util.tree_leaves(single_state.params),
        strict=True,
    ):
        np.testing.assert_allclose(fused_leaf, single_leaf, rtol=1e-5, atol=1e-6)
    assert fused["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)


def test_data_iterator_fn_gets_the_epoch_when_it_asks() -> None:
    asked: list[int] = []

    def data(epoch: int) -> Any:
        asked.append(epoch)
        return iter(probe_batches([[float(epoch)]] * 2))

    _, history = train_loop(probe_state(), probe_step, data, 3, 2, KEY, show_progress=False)
    assert asked == [0, 1, 2]
    assert history["train_value"] == [0.0, 1.0, 2.0]


def test_short_epoch_raises_data_exhausted_naming_the_epoch() -> None:
    def data(epoch: int) -> Any:
        return iter(probe_batches([[1.0]] * (10 if epoch == 0 else 7)))

    with pytest.raises(DataExhaustedError, match=r"only 7 of num_batches=10 batches in epoch 2/3"):
        train_loop(probe_state(), probe_step, data, 3, 10, KEY, show_progress=False)


def test_validation_iterator_is_consumed_across_epochs_and_running_dry_is_explained() -> None:
    val = iter(probe_batches([[float(i)] * 2 for i in range(5)]))
    with pytest.raises(DataExhaustedError) as raised:
        train_loop(
            probe_state(),
            probe_step,
            lambda: iter(probe_batches([[1.0]])),
            3,
            1,
            KEY,
            val_step_fn=probe_val_step,
            val_data_iterator=val,
            val_num_batches=2,
            show_progress=False,
        )
    message = str(raised.value)
    assert "after epoch 3/3" in message and "zero-argument callable" in message
    assert "gave 1 of val_num_batches=2" in message


def test_validation_callable_gives_a_fresh_iterator_and_none_runs_to_its_end() -> None:
    made: list[int] = []

    def val_batches() -> Any:
        made.append(1)
        return iter(probe_batches([[1.0] * 4, [2.0] * 4, [4.0] * 2]))

    _, history = train_loop(
        probe_state(),
        probe_step,
        lambda: iter(probe_batches([[1.0]])),
        4,
        1,
        KEY,
        val_step_fn=probe_val_step,
        val_data_iterator=val_batches,
        val_num_batches=None,
        val_every=2,
        show_progress=False,
    )
    assert len(made) == 2  # validations after epochs 2 and 4
    assert history["val_value"] == [pytest.approx(20.0 / 10)] * 2
    assert len(history["train_value"]) == 4


def test_early_stopping_on_a_history_key(tmp_path: Path) -> None:
    # train_value per epoch: 5, 4, 3.9, 3.95, 3.86, 1, ... with min_delta=0.15 the
    # improvements after 4 are too small: epochs 3, 4 and 5 wait, patience 3 stops at 5.
    per_epoch = [5.0, 4.0, 3.9, 3.95, 3.86, 1.0, 0.5]
    _, history = train_loop(
        probe_state(),
        probe_step,
        lambda epoch: iter(probe_batches([[per_epoch[epoch]]])),
        7,
        1,
        KEY,
        checkpoint_dir=tmp_path,
        early_stopping=EarlyStopping("train_value", mode="min", patience=3, min_delta=0.15),
        show_progress=False,
    )
    assert history["train_value"] == pytest.approx(per_epoch[:5])
    info = checkpoint_info(latest_checkpoint(tmp_path))  # type: ignore[arg-type]
    assert info.finished and info.stopped_early and info.epoch == 5
    with pytest.raises(ValueError, match="not a history key"):
        train_loop(
            probe_state(),
            probe_step,
            lambda: iter(probe_batches([[1.0]])),
            2,
            1,
            KEY,
            early_stopping=EarlyStopping("val_value", patience=1),
            show_progress=False,
        )
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("train_loss", patience=0)


def test_nothing_is_printed_without_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_loop(
        make_state(),
        train_step,
        data_fn,
        2,
        10,
        KEY,
        checkpoint_dir=tmp_path,
        val_step_fn=val_step,
        val_data_iterator=lambda: data_fn(0),
        show_progress=False,
    )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_prints_a_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    train_loop(
        make_state(),
        train_step,
        data_fn,
        2,
        10,
        KEY,
        val_step_fn=val_step,
        val_data_iterator=lambda: data_fn(0),
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  train_loss: ") and "val_loss: " in lines[0]
    assert "steps/s" in lines[1]


TEN_METRICS = ("loss", "accuracy", "cross_entropy", "l2_penalty", "top5_accuracy")


def _five_metrics(step: Any) -> Any:
    def wrapped(state: Any, batch: dict, rng_key: jax.Array) -> tuple[Any, dict]:
        state, metrics = step(state, batch, rng_key)
        loss = metrics["loss"]
        return state, {name: loss * (i + 1) for i, name in enumerate(TEN_METRICS)}

    return wrapped


def test_epoch_lines_with_ten_metrics_fit_100_columns(capsys: pytest.CaptureFixture[str]) -> None:
    train_loop(
        make_state(),
        _five_metrics(train_step),
        data_fn,
        2,
        10,
        KEY,
        val_step_fn=_five_metrics(val_step),
        val_data_iterator=lambda: data_fn(0),
    )
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    for prefix in ("train_", "val_"):
        for name in TEN_METRICS:
            assert out.count(f"{prefix}{name}: ") == 2, (prefix, name, out)
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line[:10] for line in epochs] == ["epoch 1/2 ", "epoch 2/2 "]
    assert out.count("steps/s)") == 2


def test_progress_bar_shows_rate_eta_and_metrics_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    progress = EpochProgress(3, console=console)
    progress.start_epoch(2, 100, 0)
    progress.update(40, {"loss": 0.125})
    progress.update(60, None)
    progress.end_epoch(2, {"train_loss": 0.5}, 2.0, 100)
    text = buffer.getvalue()
    assert "epoch 2/3" in text and "40/100" in text and "loss: 0.1250" in text
    assert "steps/s" in text and "train_loss: 0.5000" in text and "50.0 steps/s" in text


def test_the_loop_leaves_the_params_of_a_hand_written_loop() -> None:
    state = make_state()
    final_state, _ = train_loop(state, train_step, data_fn, 2, 10, KEY, show_progress=False)
    manual = jax.tree.map(jnp.copy, state)
    step = 0
    for epoch in range(2):
        for batch in data_fn(epoch):
            manual, _ = train_step(manual, batch, jax.random.fold_in(KEY, step))
            step += 1
    assert leaves_equal(final_state.params, manual.params)
