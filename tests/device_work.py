"""Counts the device programs `train_loop` executes, by name (run as a script, in a child).

jax's C++ dispatch path runs a jitted program without Python seeing it; this script turns
that path off (jax 0.10.2's `pjit._get_fastpath_data` returning None sends every call of
every program, op-by-op primitives included, through `pxla.ExecuteReplicated.__call__`),
then counts those calls. It must be done before any program runs, hence a fresh process.

    python tests/device_work.py STEPS [--typed-key] [--no-copy] [--checkpoint DIR]
                                      [--device-batches K]

trains a logistic regression (8 features, batch 32) for one epoch of STEPS steps over
numpy batches (with `--no-copy`: `copy_state=False`; with `--checkpoint`: saving to DIR;
with `--device-batches K`: over batches already on the device, K steps per call of a
scanned step) and prints one JSON object: {program name: executions}.
"""

from __future__ import annotations

import collections
import json
import sys
from typing import Any

from jax._src import pjit
from jax._src.interpreters import pxla

COUNTS: collections.Counter[str] = collections.Counter()
_execute = pxla.ExecuteReplicated.__call__


def _counted(self: Any, *args: Any) -> Any:
    COUNTS[self.name] += 1
    return _execute(self, *args)


pjit._get_fastpath_data = lambda *args, **kwargs: None
pxla.ExecuteReplicated.__call__ = _counted  # type: ignore[method-assign]


def main() -> None:
    import jax
    import numpy as np
    import optax
    from flax.training.train_state import TrainState

    from beagle.models import MLP
    from beagle.training import train_loop

    steps = int(sys.argv[1])
    model = MLP(features=[2])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps, 32, 8)).astype(np.float32)
    y = (x.sum(axis=2) > 0).astype(np.int32)
    params = model.init(jax.random.PRNGKey(0), x[0])["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1))

    @jax.jit(donate_argnums=0)
    def train_step(state: Any, batch: Any, key: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            logits = state.apply_fn({"params": p}, batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        noise = jax.random.uniform(key)  # the key reaches the step
        return state.apply_gradients(grads=grads), {"loss": loss, "noise": noise}

    k = (
        int(sys.argv[sys.argv.index("--device-batches") + 1])
        if "--device-batches" in sys.argv
        else 1
    )
    batches = [{"x": x[i], "y": y[i]} for i in range(steps)]
    options: dict[str, Any] = {}
    if k > 1:
        batches = jax.device_put(batches)

        @jax.jit(donate_argnums=0)
        def scanned_step(state: Any, batch: Any, keys: Any) -> Any:
            def one(state: Any, step: Any) -> Any:
                return train_step.__wrapped__(state, *step)

            return jax.lax.scan(one, state, (batch, keys))

        options = {"steps_per_call": k, "one_step_fn": train_step}

    key = jax.random.key(1) if "--typed-key" in sys.argv else jax.random.PRNGKey(1)
    jax.block_until_ready((state, key, batches))
    COUNTS.clear()  # only what the loop runs
    train_loop(
        state,
        scanned_step if k > 1 else train_step,
        lambda: iter(batches),
        num_epochs=1,
        num_batches=steps,
        rng_key=key,
        show_progress=False,
        copy_state="--no-copy" not in sys.argv,
        checkpoint_dir=(
            sys.argv[sys.argv.index("--checkpoint") + 1] if "--checkpoint" in sys.argv else None
        ),
        **options,
    )
    print(json.dumps(dict(COUNTS)))


if __name__ == "__main__":
    main()
