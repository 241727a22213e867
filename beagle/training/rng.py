"""Per-step keys: step `s` gets `jax.random.fold_in(rng_key, s)`, made a chunk at a time.

Deriving each key with its own `fold_in` costs a dispatch per step; `step_keys` derives a
whole chunk of calls' keys in one jitted call that returns one array per call.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

VALIDATION_STREAM = 2**31 - 1
"""`fold_in(rng_key, VALIDATION_STREAM)` roots the validation keys; no train step has it."""


@functools.partial(jax.jit, static_argnames=("calls", "steps_per_call"))
def _step_keys(
    rng_key: jax.Array, first_step: jax.Array, *, calls: int, steps_per_call: int
) -> tuple[jax.Array, ...]:
    steps = first_step + jnp.arange(calls * steps_per_call, dtype=jnp.uint32)
    keys = jax.vmap(lambda s: jax.random.fold_in(rng_key, s))(steps)
    if steps_per_call == 1:
        return tuple(keys[i] for i in range(calls))
    return tuple(keys[i * steps_per_call : (i + 1) * steps_per_call] for i in range(calls))


def step_keys(
    rng_key: jax.Array, first_step: int, calls: int, steps_per_call: int = 1
) -> tuple[jax.Array, ...]:
    """Keys of `calls` consecutive calls from global step `first_step`, in one dispatch.

    With `steps_per_call=1` item `i` is `fold_in(rng_key, first_step + i)`; otherwise it
    stacks the keys of that call's `steps_per_call` steps along a leading axis.
    """
    return _step_keys(rng_key, np.uint32(first_step), calls=calls, steps_per_call=steps_per_call)


@jax.jit
def _validation_key(rng_key: jax.Array, epoch: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(rng_key, VALIDATION_STREAM), epoch)


def validation_key(rng_key: jax.Array, epoch: int) -> jax.Array:
    """Root of the validation keys after 0-based `epoch`; batch `i` gets `fold_in(root, i)`."""
    return _validation_key(rng_key, np.uint32(epoch))
