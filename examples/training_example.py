"""A complete beagle.training example: an MLP classifies scikit-learn's 8x8 digits.

Run it from the repository root:

    .venv/bin/python examples/training_example.py [--epochs 15] [--checkpoints DIR]

It trains with a jitted, state-donating step, validates every epoch, keeps the newest
checkpoints plus the best by validation accuracy, stops early when validation accuracy
stops improving, and shows how to resume and how to load a checkpoint. A few seconds on
a laptop CPU.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from beagle.training import (
    EarlyStopping,
    TrainState,
    checkpoint_info,
    latest_checkpoint,
    load_checkpoint,
    train_loop,
)

BATCH_SIZE = 64


class MLP(nn.Module):
    """64 -> 128 -> 10 with dropout."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(nn.Dense(128)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(10)(x)


def load_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Digits as float32 pixels in [0, 1] and int32 labels; 20% held out for validation."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.RandomState(0).permutation(len(x))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    return {"x": x[train], "y": y[train]}, {"x": x[val], "y": y[val]}


def make_batches(
    data: dict[str, np.ndarray], epoch: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Full batches; shuffled by `epoch` (a fixed order per epoch makes resuming exact)."""
    n = len(data["y"])
    order = np.arange(n) if epoch is None else np.random.RandomState(epoch).permutation(n)
    for start in range(0, n - BATCH_SIZE + 1, BATCH_SIZE):
        idx = order[start : start + BATCH_SIZE]
        yield {"x": data["x"][idx], "y": data["y"][idx]}


@functools.partial(jax.jit, donate_argnums=0)
def train_step(
    state: TrainState, batch: dict[str, jax.Array], rng_key: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on the cross-entropy; `rng_key` drives dropout."""

    def loss_fn(params: dict) -> tuple[jax.Array, jax.Array]:
        logits = state.apply_fn(
            {"params": params}, batch["x"], train=True, rngs={"dropout": rng_key}
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
    return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}


@jax.jit
def val_step(
    state: TrainState, batch: dict[str, jax.Array], rng_key: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Loss and accuracy in eval mode (no dropout)."""
    logits = state.apply_fn({"params": state.params}, batch["x"], train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return state, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--checkpoints", default=None, help="default: a temporary folder")
    args = parser.parse_args()

    train_data, val_data = load_data()
    model = MLP()
    params = model.init(jax.random.PRNGKey(0), train_data["x"][:1], train=False)["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(3e-3))
    num_batches = len(train_data["y"]) // BATCH_SIZE

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint_dir = args.checkpoints or f"{scratch}/checkpoints"
        final_state, history = train_loop(
            state=state,
            train_step_fn=train_step,
            # Taking `epoch` gets the 0-based epoch: a new shuffle each epoch, reproducibly.
            data_iterator_fn=lambda epoch: make_batches(train_data, epoch),
            num_epochs=args.epochs,
            num_batches=num_batches,
            rng_key=jax.random.PRNGKey(42),
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=5,
            val_step_fn=val_step,
            # A zero-argument callable gives a fresh pass over the validation set each time;
            # val_num_batches=None runs it to the end.
            val_data_iterator=lambda: make_batches(val_data),
            val_num_batches=None,
            resume=True,  # a second run with the same --checkpoints continues this one
            keep=2,
            best_metric="val_accuracy",
            best_mode="max",
            early_stopping=EarlyStopping("val_accuracy", mode="max", patience=4),
            metadata={"example": "digits_mlp"},
        )

        latest = latest_checkpoint(checkpoint_dir)
        assert latest is not None
        info = checkpoint_info(latest)
        restored = load_checkpoint(latest, state)
        same = all(
            bool(jnp.array_equal(a, b))
            for a, b in zip(
                jax.tree_util.tree_leaves(restored.params),
                jax.tree_util.tree_leaves(final_state.params),
                strict=True,
            )
        )
        print(f"epochs run: {len(history['train_loss'])} (finished: {info.finished})")
        print(f"latest checkpoint: {latest.name}, restores the final parameters: {same}")
        print(f"train loss: {history['train_loss'][0]:.4f} -> {history['train_loss'][-1]:.4f}")
        print(f"validation accuracy: {history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
