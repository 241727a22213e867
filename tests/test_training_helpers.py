"""Shared pieces of the training tests: a tiny model, steps, epoch-deterministic data.

Imported by the `test_training_*` files (and by the scripts their subprocesses run), so
every run of the same configuration compiles the same steps and sees the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from beagle.training import TrainState

FEATURES = 4
BATCH = 8
EXAMPLES = 80  # 10 batches an epoch


class TinyMLP(nn.Module):
    """4 -> 8 -> 1."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1)(nn.relu(nn.Dense(8)(x)))


def make_state(seed: int = 0, learning_rate: float = 0.05) -> TrainState:
    model = TinyMLP()
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, FEATURES)))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(learning_rate))


def _dataset() -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(0)
    x = rs.randn(EXAMPLES, FEATURES).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)).astype(np.float32)
    return x, y


X, Y = _dataset()


def batches(epoch: int = 0, batch_size: int = BATCH, count: int | None = None) -> Iterator[dict]:
    """The epoch's batches in an order fixed by `epoch` (so a resumed run sees the same)."""
    order = np.random.RandomState(1000 + epoch).permutation(EXAMPLES)
    starts = range(0, EXAMPLES, batch_size)
    for i, start in enumerate(starts):
        if count is not None and i >= count:
            return
        idx = order[start : start + batch_size]
        yield {"x": X[idx], "y": Y[idx]}


def data_fn(epoch: int) -> Iterator[dict]:
    return batches(epoch)


def _loss(state: TrainState, params: Any, batch: dict, rng_key: jax.Array) -> jax.Array:
    preds = state.apply_fn({"params": params}, batch["x"])
    # The key matters: a wrong key for any step changes the trained parameters.
    noise = 1.0 + 0.1 * jax.random.normal(rng_key, preds.shape)
    return jnp.mean((preds * noise - batch["y"]) ** 2)


@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: dict, rng_key: jax.Array) -> tuple[TrainState, dict]:
    loss, grads = jax.value_and_grad(lambda p: _loss(state, p, batch, rng_key))(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


@jax.jit
def val_step(state: TrainState, batch: dict, rng_key: jax.Array) -> tuple[TrainState, dict]:
    preds = state.apply_fn({"params": state.params}, batch["x"])
    return state, {"loss": jnp.mean((preds - batch["y"]) ** 2)}


def probe_state() -> dict[str, jax.Array]:
    return {"calls": jnp.zeros((), jnp.int32)}


@functools.partial(jax.jit, donate_argnums=0)
def probe_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
    """Trains nothing: its metric `value` is the batch's mean of `v`, known on the host."""
    return {"calls": state["calls"] + 1}, {"value": jnp.mean(batch["v"])}


def probe_batches(values: list[list[float]]) -> list[dict]:
    """One batch per inner list, of those values (batch size = its length)."""
    return [{"v": np.asarray(v, np.float32)} for v in values]


def leaves_equal(a: Any, b: Any) -> bool:
    """Bitwise equality of two pytrees of arrays."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(la, lb, strict=True)
    )


@jax.jit
def probe_val_step(state: dict, batch: dict, rng_key: jax.Array) -> tuple[dict, dict]:
    """`probe_step`'s metric without touching the state (validation never donates)."""
    return state, {"value": jnp.mean(batch["v"])}
