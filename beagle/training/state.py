"""`TrainState`: Flax's training state plus optional BatchNorm statistics."""

from __future__ import annotations

from typing import Any

from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax `TrainState` with a `batch_stats` field (None for models without BatchNorm).

    `TrainState.create(apply_fn=..., params=..., tx=..., batch_stats=...)` works as in Flax;
    `state.apply_gradients(grads=...)` keeps `batch_stats`, so a BatchNorm step replaces
    them with `new_state.replace(batch_stats=updates["batch_stats"])`.
    """

    batch_stats: Any = None
