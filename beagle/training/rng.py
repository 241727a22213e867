"""Per-step keys: step `s` gets `jax.random.fold_in(rng_key, s)`, made a chunk at a time.

The key design. For the default key, a raw `uint32[2]` threefry key (`jax.random.PRNGKey`,
with `jax_default_prng_impl` at `threefry2x32`), the keys are computed on the HOST:
`fold_in_host` is a vectorised numpy threefry-2x32 that gives bit for bit what
`jax.random.fold_in` gives, a chunk of steps in one call of ~20 numpy operations, with no
compilation and no device work. The loop passes each step a numpy view of that chunk, so
the key travels to the device with the batch, in the step's own call: per step there is
no other device operation (indexing a stacked key array on the device costs a dispatch,
~30 µs a step on a GPU; a numpy view costs ~0.1 µs). `host_key` turns such a key into
its numpy form once per run; `step_keys` and `validation_key` then stay on the host.

Any other key (a typed `jax.random.key`, another implementation) takes the fallback: one
jitted call per chunk returns the chunk's keys stacked in one device array, computed for
a fixed number of calls (`FALLBACK_STEPS // steps_per_call`, whatever the chunk's
length) so that it compiles once per run; the loop indexes it per step.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import numpy as np

VALIDATION_STREAM = 2**31 - 1
"""`fold_in(rng_key, VALIDATION_STREAM)` roots the validation keys; no train step has it."""

FALLBACK_STEPS = 256
"""Steps whose keys one fallback call derives (the loop's chunks are never longer)."""


def _config(name: str) -> Any:
    return getattr(jax.config, name)  # typed stubs do not list the flags


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _threefry2x32(
    k1: np.ndarray, k2: np.ndarray, x1: np.ndarray, x2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The threefry-2x32 hash (20 rounds), as jax's `threefry2x32_p` computes it."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    a = x1 + ks[0]
    b = x2 + ks[1]
    for group in range(5):
        for rotation in _ROTATIONS[group % 2]:
            a = a + b
            b = (b << np.uint32(rotation)) | (b >> np.uint32(32 - rotation))
            b = a ^ b
        a = a + ks[(group + 1) % 3]
        b = b + ks[(group + 2) % 3] + np.uint32(group + 1)
    return a, b


def fold_in_host(key: np.ndarray, data: Any) -> np.ndarray:
    """`jax.random.fold_in(key, d)` for each `d` in `data`, on the host: shape (len, 2).

    `key` is a raw threefry key (numpy `uint32[2]`); `data` is cast to uint32 as jax does.
    Also `jax.random.split(key, n) == fold_in_host(key, range(n))` (threefry's split
    is fold-like since jax 0.5, `jax_threefry_partitionable`).
    """
    counts = np.asarray(data, dtype=np.int64).astype(np.uint32).reshape(-1)
    k1 = np.full(counts.shape, key[0], np.uint32)
    k2 = np.full(counts.shape, key[1], np.uint32)
    a, b = _threefry2x32(k1, k2, np.zeros_like(counts), counts)
    return np.stack([a, b], axis=-1)


def host_key(key: Any) -> Any:
    """`key` as a numpy `uint32[2]` when it is a raw threefry key, else `key` unchanged.

    One transfer to the host, once per run; `step_keys` then computes on the host.
    """
    if _config("jax_default_prng_impl") != "threefry2x32":
        return key
    dtype = getattr(key, "dtype", None)
    if dtype is None or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if np.dtype(dtype) != np.uint32 or tuple(np.shape(key)) != (2,):
        return key
    if isinstance(key, jax.Array) and not key.is_fully_addressable:
        return key  # a global array spread over processes: not this host's to read
    return np.array(jax.device_get(key), dtype=np.uint32)


def host_split(key: np.ndarray, num: int) -> np.ndarray:
    """`jax.random.split(key, num)` of a host threefry key, on the host; needs
    `jax_threefry_partitionable` (the default), with which split is a fold_in of 0..num-1."""
    if not _config("jax_threefry_partitionable"):
        return np.asarray(jax.device_get(jax.random.split(key, num)))
    return fold_in_host(key, np.arange(num))


def host_seed_key(seed: int) -> Any:
    """`jax.random.PRNGKey(seed)`: on the host for the default threefry implementation
    and a seed in [0, 2**31), else from jax."""
    if _config("jax_default_prng_impl") == "threefry2x32" and 0 <= seed < 2**31:
        return np.array([0, seed], dtype=np.uint32)
    return jax.random.PRNGKey(seed)


@functools.partial(jax.jit, static_argnames=("calls", "steps_per_call"))
def _stacked_keys(
    rng_key: jax.Array, first_step: jax.Array, *, calls: int, steps_per_call: int
) -> jax.Array:
    steps = first_step + jax.numpy.arange(calls * steps_per_call, dtype=jax.numpy.uint32)
    keys = jax.vmap(lambda s: jax.random.fold_in(rng_key, s))(steps)
    if steps_per_call == 1:
        return keys
    return keys.reshape((calls, steps_per_call, *keys.shape[1:]))


def step_keys(rng_key: Any, first_step: int, calls: int, steps_per_call: int = 1) -> Any:
    """Keys of `calls` consecutive calls from global step `first_step`, indexed by call.

    With `steps_per_call=1` item `i` is `fold_in(rng_key, first_step + i)`; otherwise it
    stacks the keys of that call's `steps_per_call` steps along a leading axis. A host
    key (`host_key`) gives a numpy array, computed on the host; any other key a device
    array with at least `calls` items, from one jitted call that compiles once per
    `steps_per_call`.
    """
    if isinstance(rng_key, np.ndarray):
        keys = fold_in_host(rng_key, first_step + np.arange(calls * steps_per_call))
        return keys if steps_per_call == 1 else keys.reshape(calls, steps_per_call, 2)
    fixed = max(calls, math.ceil(FALLBACK_STEPS / steps_per_call))
    return _stacked_keys(rng_key, np.uint32(first_step), calls=fixed, steps_per_call=steps_per_call)


def validation_key(rng_key: Any, epoch: int) -> Any:
    """Root of the validation keys after 0-based `epoch`; batch `i` gets `fold_in(root, i)`."""
    if isinstance(rng_key, np.ndarray):
        stream = fold_in_host(rng_key, [VALIDATION_STREAM])[0]
        return fold_in_host(stream, [epoch])[0]
    return _validation_key(rng_key, np.uint32(epoch))


@jax.jit
def _validation_key(rng_key: jax.Array, epoch: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(rng_key, VALIDATION_STREAM), epoch)
