"""Benchmark: images/s of the `images` source feeding a small CNN, against the same CNN
fed the same images preloaded as arrays (the ceiling).

The script writes a folder of 32x32 images (half PNG, half JPEG, 10 classes) and trains
one epoch per variant and round with a jitted, state-donating step, the variants
interleaved (their order rotated) so that a noisy moment hits them all:

- `arrays`: the images decoded once into one float32 array; each batch a slice of a
  per-epoch permutation (what the array sources do): the ceiling.
- `images, workers 0`: `beagle.images.images(...)`, every batch read, decoded and resized
  in the training process.
- `images, workers 2`: the same in two grain worker processes, started once (during
  a first epoch that is timed apart: "first epoch") and kept from epoch to epoch.

Each round gives the ratio of a variant's steady-state images/s to `arrays`'; the
medians are shown.

    .venv/bin/python bench/bench_images.py [--rounds 3] [--images 2048]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from beagle.examples import images  # noqa: E402
from beagle.models import CNN  # noqa: E402
from beagle.training import TrainState  # noqa: E402

BATCH = 64
SIZE = 32
CLASSES = 10


def write_folder(root: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % CLASSES
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")


def make_step() -> tuple[TrainState, Callable[..., Any]]:
    model = CNN(features=(16, 32), num_classes=CLASSES)
    x = np.zeros((BATCH, SIZE, SIZE, 3), np.float32)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(1e-3),
        batch_stats=variables["batch_stats"],
    )

    def step(state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, jax.Array]:
        def loss_fn(params: Any) -> tuple[jax.Array, Any]:
            logits, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats},
                batch["image"],
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            return loss.mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
        return state, loss

    return state, jax.jit(step, donate_argnums=0)


def preloaded(source: Any) -> dict[str, np.ndarray]:
    """Every training image decoded into one array (the ceiling's data)."""
    batches = list(source.train_iterator(epoch=0))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def array_batches(arrays: dict[str, np.ndarray], epoch: int) -> Iterator[dict[str, np.ndarray]]:
    order = np.random.default_rng([0, epoch]).permutation(len(arrays["label"]))
    for i in range(len(order) // BATCH):
        rows = order[i * BATCH : (i + 1) * BATCH]
        yield {k: v[rows] for k, v in arrays.items()}


def epoch_rate(
    state: TrainState, step: Callable[..., Any], batches: Iterator[dict[str, Any]]
) -> tuple[TrainState, float]:
    started = time.perf_counter()
    seen = 0
    loss = None
    for batch in batches:
        state, loss = step(state, batch)
        seen += len(batch["label"])
    if loss is not None:
        loss.block_until_ready()
    return state, seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        write_folder(root, args.images)
        common = {"image_size": [SIZE, SIZE], "seed": 0}
        zero = images(BATCH, train=str(root), **common)
        two = images(BATCH, train=str(root), workers=2, **common)
        arrays = preloaded(zero)
        state, step = make_step()
        state, _ = epoch_rate(state, step, array_batches(arrays, 0))  # compile
        variants: dict[str, Callable[[int], Iterator[dict[str, Any]]]] = {
            "arrays": lambda e: array_batches(arrays, e),
            "images, workers 0": lambda e: zero.train_iterator(epoch=e),
            "images, workers 2": lambda e: two.train_iterator(epoch=e),
        }
        names = list(variants)
        first: dict[str, float] = {}
        for name in names:  # epoch 0: the workers start (once per run); not in the ratios
            started = time.perf_counter()
            state, _ = epoch_rate(state, step, variants[name](0))
            first[name] = time.perf_counter() - started
        rates: dict[str, list[float]] = {name: [] for name in names}
        ratios: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            this_round: dict[str, float] = {}
            for name in names[r % len(names) :] + names[: r % len(names)]:
                state, rate = epoch_rate(state, step, variants[name](r + 1))
                this_round[name] = rate
            for name in names:
                rates[name].append(this_round[name])
                ratios[name].append(this_round[name] / this_round["arrays"])
        print(f"{args.images} images {SIZE}x{SIZE}, batch {BATCH}, {args.rounds} rounds")
        print(f"{'variant':20} {'images/s':>10} {'ratio':>8} {'first epoch':>12}")
        print("-" * 53)
        for name in names:
            rate = statistics.median(rates[name])
            ratio = statistics.median(ratios[name])
            print(f"{name:20} {rate:10.0f} {ratio:8.3f} {first[name]:11.2f}s")


if __name__ == "__main__":  # grain's workers start with `spawn`: they import this file
    main()
