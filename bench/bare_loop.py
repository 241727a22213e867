"""The hand-written baseline of `bench_speed.py`: one jitted step, nothing else.

The same model classes (`beagle.models`), optimizer and step math as the generated
modules of `speed_workloads.py`'s specs, written by hand as a user would: a jitted,
state-donating `train_step(state, batch)` (none of these models draws random numbers,
so the step takes no key) and, for W2, a jitted `val_step`.

`run_bare` is the in-process loop over prebuilt batches: it fetches one float per epoch
(`naive=True` instead fetches every metric after every step). Run as a script, this file
is the whole-process baseline ("plain script"): it loads the .npz files, shuffles each
epoch with one permutation, slices NumPy batches and trains:

    python bench/bare_loop.py W0 train.npz [--val val.npz] --epochs 4 --steps 1638
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax.training.train_state import TrainState  # noqa: E402

from beagle.models import CNN, MLP  # noqa: E402

Batch = dict[str, Any]
Step = Callable[..., tuple[TrainState, dict[str, jax.Array]]]


class BNState(TrainState):
    batch_stats: Any = None


def make_state(name: str) -> TrainState:
    """The initial state of workload `name`, built as the generated module builds it."""
    key = jax.random.PRNGKey(0)
    if name == "W0":
        model: Any = MLP(features=[1])
        params = model.init(key, jnp.zeros((1, 8)))["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1))
    if name == "W1":
        model = MLP(features=[256, 256, 1])
        params = model.init(key, jnp.zeros((1, 64)))["params"]
        return TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    model = CNN(features=[16, 32], num_classes=10)
    variables = model.init(key, jnp.zeros((1, 28, 28, 1)), train=False)
    return BNState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(1e-3),
        batch_stats=variables["batch_stats"],
    )


@functools.partial(jax.jit, donate_argnums=0)
def w0_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    def loss_fn(params: Any) -> jax.Array:
        logits = state.apply_fn({"params": params}, batch["x"], train=True)
        return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


@functools.partial(jax.jit, donate_argnums=0)
def w1_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    def loss_fn(params: Any) -> jax.Array:
        preds = state.apply_fn({"params": params}, batch["x"], train=True)
        return optax.squared_error(preds, batch["y"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


@functools.partial(jax.jit, donate_argnums=0)
def w2_step(state: BNState, batch: Batch) -> tuple[BNState, dict[str, jax.Array]]:
    def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, jax.Array]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, (updates["batch_stats"], logits)

    (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    state = state.apply_gradients(grads=grads, batch_stats=stats)
    return state, {"loss": loss, "accuracy": accuracy}


@jax.jit
def w2_val_step(state: BNState, batch: Batch) -> dict[str, jax.Array]:
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}


STEPS: dict[str, tuple[Step, Callable[..., dict[str, jax.Array]] | None]] = {
    "W0": (w0_step, None),
    "W1": (w1_step, None),
    "W2": (w2_step, w2_val_step),
}


def run_bare(
    name: str,
    state: TrainState,
    batches: Sequence[Batch] | Callable[[int], Sequence[Batch]],
    epochs: int,
    val_batches: Sequence[Batch] = (),
    naive: bool = False,
) -> float:
    """Train `epochs` epochs; return the last epoch's last loss (one float per epoch).

    `batches` is a list reused every epoch or a function of the epoch. The caller's
    `state` stays valid (the loop starts from a copy, as `train_loop` does). With
    `naive`, every metric of every step is fetched as a float.
    """
    step, val_step = STEPS[name]
    state = jax.tree.map(jnp.copy, state)
    loss = float("nan")
    for epoch in range(epochs):
        metrics: dict[str, jax.Array] = {}
        for batch in batches(epoch) if callable(batches) else batches:
            state, metrics = step(state, batch)
            if naive:
                for value in metrics.values():
                    float(value)
        if val_step is not None and val_batches:
            val_metrics: dict[str, jax.Array] = {}
            for batch in val_batches:
                val_metrics = val_step(state, batch)
                if naive:
                    for value in val_metrics.values():
                        float(value)
            float(val_metrics["loss"])
        loss = float(metrics["loss"])
    return loss


def main() -> int:
    parser = argparse.ArgumentParser(description="the plain-script baseline of bench_speed.py")
    parser.add_argument("workload", choices=sorted(STEPS))
    parser.add_argument("train", type=Path)
    parser.add_argument("--val", type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    args = parser.parse_args()
    with np.load(args.train) as f:
        train = {k: f[k] for k in f.files}
    val: list[Batch] = []
    if args.val is not None:
        with np.load(args.val) as f:
            arrays = {k: f[k] for k in f.files}
        n = len(next(iter(arrays.values())))
        val = [
            {k: v[i : i + args.batch] for k, v in arrays.items()} for i in range(0, n, args.batch)
        ]
    examples = len(next(iter(train.values())))
    rng = np.random.default_rng(0)

    def epoch_batches(epoch: int) -> list[Batch]:
        order = rng.permutation(examples)
        shuffled = {k: v[order] for k, v in train.items()}
        return [
            {k: v[i * args.batch : (i + 1) * args.batch] for k, v in shuffled.items()}
            for i in range(args.steps)
        ]

    loss = run_bare(args.workload, make_state(args.workload), epoch_batches, args.epochs, val)
    print(f"final loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
