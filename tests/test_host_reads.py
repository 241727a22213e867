"""Host reads: the counter sees every way Python code reads a jax Array, and `train_loop`
reads a bounded number of values per epoch, however many steps the epoch has."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from host_reads import counting_host_reads
from test_training_helpers import batches, make_state, train_step, val_step

from beagle.training import train_loop

KEY = jax.random.PRNGKey(0)

CONVERSIONS: dict[str, Callable[[jax.Array], object]] = {
    "np.asarray": lambda x: np.asarray(x),
    "np.array": lambda x: np.array(x),
    "float": lambda x: float(x),
    "int": lambda x: int(x),
    "bool": lambda x: bool(x > 1),
    "item": lambda x: x.item(),
    "tolist": lambda x: x.tolist(),
    "f-string": lambda x: f"{x}",
    "format spec": lambda x: f"{x:.3f}",
    "repr": lambda x: repr(x),
    "str": lambda x: str(x),
    "jax.device_get": lambda x: jax.device_get(x),
    "jax.device_get of a tree": lambda x: jax.device_get({"a": x, "b": [x + 1]}),
    "typed key device_get": lambda x: jax.device_get(jax.random.key(0)),
}
EXPECTED_READS = {"jax.device_get of a tree": 2}


@pytest.mark.parametrize("conversion", sorted(CONVERSIONS))
def test_the_counter_sees_each_conversion_once(conversion: str) -> None:
    x = jnp.arange(3.0).sum()  # a fresh device array: nothing cached on the host yet
    x.block_until_ready()
    with counting_host_reads() as reads:
        CONVERSIONS[conversion](x)
    assert reads.count == EXPECTED_READS.get(conversion, 1), reads.routes


def test_the_counter_sees_nothing_for_work_that_stays_on_the_device() -> None:
    x = jnp.arange(3.0)
    step = jax.jit(lambda a: (a * 2).sum())
    step(x).block_until_ready()  # compiled outside the count
    with counting_host_reads() as reads:
        y = step(x + 1)
        z = jnp.where(y > 1, y, 0.0)
        assert z.shape == () and z.dtype == jnp.float32  # metadata: no read
        z.block_until_ready()
        jnp.asarray(np.ones(3))  # host to device is not a read
    assert reads.routes == []


def test_the_counter_leaves_jax_and_numpy_as_they_were() -> None:
    x = jnp.ones(2)
    before = (type(x).__dict__["_value"], type(x).__dict__["__array__"], np.asarray, np.array)
    with counting_host_reads():
        pass
    after = (type(x).__dict__["_value"], type(x).__dict__["__array__"], np.asarray, np.array)
    assert before == after


@functools.partial(jax.jit, donate_argnums=0)
def _scanned_step(state: Any, stacked: dict, rng_keys: jax.Array) -> tuple[Any, dict]:
    """`train_step` over a leading axis of batches and keys (`steps_per_call` > 1)."""
    return jax.lax.scan(lambda carry, xs: train_step(carry, *xs), state, (stacked, rng_keys))


def _reads_in_training(num_batches: int, epochs: int, steps_per_call: int) -> list[str]:
    def data(epoch: int) -> Iterator[dict]:
        return batches(epoch, count=num_batches)

    def val_data() -> Iterator[dict]:
        return batches(0, count=num_batches)

    def run(state: Any) -> Any:
        return train_loop(
            state,
            train_step if steps_per_call == 1 else _scanned_step,
            data,
            epochs,
            num_batches,
            KEY,
            val_step_fn=val_step,
            val_data_iterator=val_data,
            show_progress=False,
            steps_per_call=steps_per_call,
        )

    state = make_state()  # built outside the count
    with counting_host_reads() as reads:
        _, history = run(state)
    assert len(history["train_loss"]) == epochs and len(history["val_loss"]) == epochs
    return reads.routes


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_train_loop_reads_a_fixed_number_of_values_per_epoch_whatever_its_length(
    steps_per_call: int,
) -> None:
    # Compiling reads nothing, so the first run needs no warm-up.
    one_short_epoch = _reads_in_training(num_batches=4, epochs=1, steps_per_call=steps_per_call)
    one_long_epoch = _reads_in_training(num_batches=8, epochs=1, steps_per_call=steps_per_call)
    two_long_epochs = _reads_in_training(num_batches=8, epochs=2, steps_per_call=steps_per_call)
    # Twice the steps (and validation batches) per epoch read nothing more; each epoch
    # reads the same: its train and validation sums, together. Besides, a run reads its
    # key once, at the start (its steps' keys are computed on the host: see rng.py).
    assert len(one_long_epoch) == len(one_short_epoch), (one_short_epoch, one_long_epoch)
    assert len(two_long_epochs) == 2 * len(one_long_epoch) - 1, (one_long_epoch, two_long_epochs)
    assert 0 < len(one_short_epoch) <= 16, one_short_epoch
