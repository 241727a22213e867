"""A `train_loop` run over a real `ArraySource`, for tests/test_splits.py (a subprocess).

`python tests/seek_worker.py DIR [--pause-at E:B]` trains a small MLP for 3 epochs of 10
batches with checkpoints in DIR/checkpoints (resuming from them when there are some). The
source's training arrays count the rows gathered from them, and each epoch's call of
`data_iterator_fn` is logged to DIR/calls.jsonl as {epoch, start, rows gathered, batches}.

With `--pause-at E:B` the data function, before yielding batch B of epoch E (0-based),
writes DIR/paused and waits for DIR/go: the test signals the process in between, so
the stop lands at a known step. At the end DIR/result.npz holds the params and history.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from beagle import data
from beagle.training import TrainingInterrupted, train_loop
from beagle.training.state import TrainState


class Counted(np.ndarray):
    """An array that counts the rows its fancy-index gathers read."""

    rows = 0

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, np.ndarray):
            Counted.rows += len(index)
        return super().__getitem__(index)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--pause-at", default=None)
    args = parser.parse_args()
    folder: Path = args.folder
    pause = tuple(int(p) for p in args.pause_at.split(":")) if args.pause_at else None

    source = data.synthetic(16, task="regression", examples=200, val_fraction=0.2, seed=3)
    source.train = {key: value.view(Counted) for key, value in source.train.items()}
    assert source.train_batches == 10

    def batches(epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        before, count = Counted.rows, 0
        try:
            for index, batch in enumerate(source.train_iterator(epoch, start), start):
                if pause is not None and (epoch, index) == pause:
                    (folder / "paused").write_text("")
                    while not (folder / "go").exists():
                        time.sleep(0.01)
                count += 1
                yield {key: np.asarray(value) for key, value in batch.items()}
        finally:  # the loop drops the iterator after its last batch, which closes it
            rows = Counted.rows - before
            record = {"epoch": epoch, "start": start, "rows": rows, "batches": count}
            with (folder / "calls.jsonl").open("a") as log:
                log.write(json.dumps(record) + "\n")

    model = nn.Dense(1)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(0.01))

    @jax.jit
    def train_step(state: Any, batch: Any, key: jax.Array) -> Any:
        def loss_fn(params: Any) -> jax.Array:
            noise = 0.01 * jax.random.normal(key, batch["y"].shape)  # the step key matters
            predictions = state.apply_fn({"params": params}, batch["x"])
            return jnp.mean((predictions - batch["y"] + noise) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), {"loss": loss}

    try:
        final, history = train_loop(
            state,
            train_step,
            batches,
            num_epochs=3,
            num_batches=10,
            rng_key=jax.random.PRNGKey(7),
            checkpoint_dir=folder / "checkpoints",
            resume=True,
            show_progress=False,
        )
    except TrainingInterrupted as error:
        print(error.step)
        return 3
    leaves = {f"p{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(final.params))}
    np.savez(folder / "result.npz", loss=np.asarray(history["train_loss"]), **leaves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
