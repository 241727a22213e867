"""Clear errors for common mistakes in what is passed to train_loop or what a step returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from test_training_helpers import probe_batches, probe_state, probe_step, probe_val_step

import beagle.training.loop as loop_module
from beagle.training import EarlyStopping, train_loop

KEY = jax.random.PRNGKey(0)
BATCHES = probe_batches([[float(i), float(i)] for i in range(8)])


def _run(step: Any = probe_step, data: Any = None, num_batches: int = 8, **options: Any) -> dict:
    _, history = train_loop(
        probe_state(),
        step,
        data if data is not None else (lambda: iter(BATCHES)),
        options.pop("num_epochs", 1),
        num_batches,
        KEY,
        show_progress=False,
        **options,
    )
    return history


def _with_extra_metric(at: Any) -> Any:
    """probe_step, plus a metric `extra` at the calls (0-based) where `at(call)` is true."""
    calls: list[int] = []

    def step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
        state, metrics = probe_step(state, batch, rng_key)
        calls.append(1)
        return state, ({**metrics, "extra": metrics["value"]} if at(len(calls) - 1) else metrics)

    return step


@pytest.mark.parametrize(
    ("at", "step", "returned", "expected"),
    [
        (lambda call: call % 2 == 1, 1, "['extra', 'value']", "['value']"),
        (lambda call: call == 0, 1, "['value']", "['extra', 'value']"),
        (lambda call: call >= 5, 5, "['extra', 'value']", "['value']"),  # in a later chunk
    ],
    ids=["sometimes", "first_only", "later_chunk"],
)
def test_a_step_returning_other_metric_names_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, at: Any, step: int, returned: str, expected: str
) -> None:
    monkeypatch.setattr(loop_module, "CHUNK_STEPS", 4)
    with pytest.raises(ValueError, match="every step must return the same metric names") as raised:
        _run(_with_extra_metric(at))
    assert f"step {step} " in str(raised.value)
    assert f"returned {returned}, expected {expected}" in str(raised.value)


def test_a_validation_step_returning_other_metric_names_is_a_clear_error() -> None:
    calls: list[int] = []

    def val_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
        calls.append(1)
        state, metrics = probe_val_step(state, batch, rng_key)
        return state, (metrics if len(calls) == 1 else {"other": metrics["value"]})

    with pytest.raises(ValueError, match="every step must return the same metric names") as raised:
        _run(val_step_fn=val_step, val_data_iterator=lambda: iter(BATCHES[:3]))
    assert "val_step_fn" in str(raised.value)


@pytest.mark.parametrize(
    ("step", "returned"),
    [
        (lambda state, batch, key: state, "a dict"),
        (lambda state, batch, key: (state, 1.0), "a float"),
        (lambda state, batch, key: (state, {"value": 1.0}, 0), "a tuple of length 3"),
    ],
    ids=["state_only", "non_dict_metrics", "three_values"],
)
def test_a_step_must_return_state_and_a_dict_of_metrics(step: Any, returned: str) -> None:
    with pytest.raises(TypeError, match=r"train_step_fn must return \(state, dict of metrics\)"):
        _run(step)
    with pytest.raises(TypeError, match=returned):
        _run(step)


def test_a_generator_object_for_data_iterator_fn_is_refused_at_the_start() -> None:
    generator = iter(BATCHES)
    with pytest.raises(TypeError, match="zero-argument function") as raised:
        _run(data=(batch for batch in generator))
    assert "lambda: iter(batches)" in str(raised.value) and "generator" in str(raised.value)
    assert len(list(generator)) == len(BATCHES)  # refused before taking anything


def test_a_scalar_first_leaf_is_passed_over_for_the_batch_size() -> None:
    # "a_index" sorts first and is a scalar: the batch size is that of "v" (2 or 1).
    batches = [{"a_index": np.int32(i), **b} for i, b in enumerate(probe_batches([[1, 1], [4]]))]
    history = _run(data=lambda: iter(batches), num_batches=2)
    assert history["train_value"] == [pytest.approx((1 * 2 + 4 * 1) / 3)]


def test_a_batch_without_a_batch_axis_is_a_clear_error() -> None:
    batches = [{"v": np.float32(1.0)}] * 8
    with pytest.raises(ValueError, match="cannot tell the batch size"):
        _run(data=lambda: iter(batches))


def test_steps_per_call_with_batches_of_unequal_shapes_is_a_clear_error() -> None:
    batches = probe_batches([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0]])
    with pytest.raises(ValueError, match="steps_per_call=4 stacks 4 batches") as raised:
        _run(data=lambda: iter(batches), num_batches=4, steps_per_call=4)
    assert "equal shapes" in str(raised.value) and "drop_remainder" in str(raised.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"early_stopping": EarlyStopping("value")}, "early_stopping.metric='value'"),
        ({"best_metric": "loss"}, "best_metric='loss'"),
        ({"best_metric": "val_value"}, "no val_step_fn"),
    ],
)
def test_a_metric_option_that_can_never_be_a_history_key_fails_before_training(
    tmp_path: Path, options: dict, message: str
) -> None:
    taken: list[int] = []

    def data() -> Iterator[dict]:
        taken.append(1)
        return iter(BATCHES)

    with pytest.raises(ValueError, match=message):
        _run(data=data, checkpoint_dir=tmp_path, **options)
    assert not taken


@pytest.mark.parametrize(
    "options",
    [{"early_stopping": EarlyStopping("train_valeu")}, {"best_metric": "train_valeu"}],
)
def test_a_misspelt_train_metric_fails_after_the_first_chunk_not_the_first_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict
) -> None:
    monkeypatch.setattr(loop_module, "CHUNK_STEPS", 2)
    taken: list[int] = []

    def data() -> Iterator[dict]:
        for batch in BATCHES:
            taken.append(1)
            yield batch

    with pytest.raises(ValueError, match="'train_valeu' is not a history key") as raised:
        _run(data=data, checkpoint_dir=tmp_path, **options)
    assert "train_value" in str(raised.value)
    assert len(taken) == 2  # the first fold, not the end of the 8-step epoch
