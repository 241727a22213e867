"""`TrainState`: Flax's training state plus optional BatchNorm statistics and loss scale."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax.training import train_state
from flax.training.dynamic_scale import DynamicScale


class TrainState(train_state.TrainState):
    """Flax `TrainState` with a `batch_stats` field (None for models without BatchNorm) and
    a `dynamic_scale` field (None unless the model computes in float16).

    `TrainState.create(apply_fn=..., params=..., tx=..., batch_stats=...)` works as in Flax;
    `state.apply_gradients(grads=...)` keeps `batch_stats`, so a BatchNorm step replaces
    them with `new_state.replace(batch_stats=updates["batch_stats"])`. `dynamic_scale` is
    a `flax.training.dynamic_scale.DynamicScale` (see `initial_dynamic_scale`): a pytree,
    so it is checkpointed and restored with the rest of the state.
    """

    batch_stats: Any = None
    dynamic_scale: Any = None


def initial_dynamic_scale() -> DynamicScale:
    """Flax's dynamic loss scale with its defaults (scale 2**16, doubled after 2000 finite
    steps, halved on an overflow), its state held in arrays (a jitted step then sees the
    same types on every call, and orbax saves them like any other leaf)."""
    # flax annotates these fields as int and float; a step turns them into arrays anyway.
    return DynamicScale().replace(
        fin_steps=jnp.zeros((), jnp.int32), scale=jnp.asarray(2.0**16, jnp.float32)
    )
