"""A tiny model for `test_step_combinations.py`, imported by the modules it compiles.

`ProbeNet` has every feature a spec can switch on: BatchNorm, dropout (the `dropout`
stream), a second RNG stream (`noise`), and a tuple or dict return value. Besides its
prediction it returns what each stream drew, so a step's metrics show which keys the
model was given.
"""

from __future__ import annotations

import flax.linen as nn
import jax

STREAMS = ("dropout", "noise")


class ProbeNet(nn.Module):
    """x -> Dense(8) -> [BatchNorm] -> relu -> Dropout -> Dense(1), plus stream draws."""

    batch_norm: bool = False
    streams: int = 1  # how many of STREAMS the model draws from
    as_dict: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, ...] | dict[str, jax.Array]:
        hidden = nn.Dense(8)(x)
        if self.batch_norm:
            hidden = nn.BatchNorm(use_running_average=not train, momentum=0.5)(hidden)
        hidden = nn.Dropout(0.5, deterministic=not train)(nn.relu(hidden))
        prediction = nn.Dense(1)(hidden)
        draws = [jax.random.uniform(self.make_rng(name), (2,)) for name in STREAMS[: self.streams]]
        if self.as_dict:
            return {"prediction": prediction, **dict(zip(STREAMS, draws, strict=False))}
        return (prediction, *draws)


def first_draw(draws: jax.Array) -> jax.Array:
    """A metric: the first number a stream drew this step."""
    return draws[0]
