"""Benchmark: steady-state speed of `train_loop` against a bare hand-written loop.

For each workload the same jitted, state-donating step runs under several loops, the
variants interleaved (their order rotated) in every round of one process, so a noisy
moment on the machine hits them all; each round gives paired ratios of steps/s, and the
medians over the rounds (at least 7) are reported.

- `bare`: `for batch, key in ...: state, _ = step(state, batch, key)` with the batches
  and the keys already on the device, one block at the end; validation likewise.
- `train_loop`: `train_loop(..., show_progress=False)` fed the same on-device batches.
- `naive`: the bare loop plus `float()` of every metric after every step (reference).
- `train_loop + ckpt` (W2): `train_loop` with an orbax checkpoint after every epoch,
  compared with `train_loop` without one; the time each save blocks the loop is shown.

W1: MLP 64-256-256-1, batch 128, MSE, Adam. W2: CNN (two 3x3 conv + BatchNorm + ReLU +
avg-pool blocks, 16 and 32 channels) on 28x28x1, batch 64, cross-entropy + accuracy,
Adam, with a validation pass per epoch. Targets: train_loop / bare >= 0.97 on both, and
W2 with checkpoints / without >= 0.97.

    .venv/bin/python bench/bench_training.py [--rounds 9] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from beagle.training import TrainState, train_loop  # noqa: E402
from beagle.training import loop as loop_module  # noqa: E402

TARGET = 0.97


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(256)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(1)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for features in (16, 32):
            x = nn.Conv(features, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


@functools.partial(jax.jit, donate_argnums=0)
def w1_step(state: TrainState, batch: dict, rng_key: jax.Array) -> tuple[TrainState, dict]:
    def loss_fn(params: Any) -> jax.Array:
        preds = state.apply_fn({"params": params}, batch["x"])
        return jnp.mean((preds - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


@functools.partial(jax.jit, donate_argnums=0)
def w2_step(state: TrainState, batch: dict, rng_key: jax.Array) -> tuple[TrainState, dict]:
    def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, jax.Array]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, (updates, logits)

    (loss, (updates, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state = state.apply_gradients(grads=grads).replace(batch_stats=updates["batch_stats"])
    return new_state, {"loss": loss, "accuracy": accuracy}


@jax.jit
def w2_val_step(state: TrainState, batch: dict, rng_key: jax.Array) -> tuple[TrainState, dict]:
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, batch["image"], train=False
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return state, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}


@dataclass
class Workload:
    name: str
    state: TrainState
    step: Callable[..., Any]
    batches: list[dict]
    epochs: int
    val_step: Callable[..., Any] | None = None
    val_batches: list[dict] | None = None

    @property
    def steps(self) -> int:
        return self.epochs * len(self.batches)


def make_w1(steps_per_epoch: int, epochs: int) -> Workload:
    rs = np.random.RandomState(0)
    model = MLP()
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    batches = [
        {"x": rs.randn(128, 64).astype(np.float32), "y": rs.randn(128, 1).astype(np.float32)}
        for _ in range(steps_per_epoch)
    ]
    return Workload("W1 MLP", state, w1_step, jax.device_put(batches), epochs)


def make_w2(steps_per_epoch: int, val_batches: int, epochs: int) -> Workload:
    rs = np.random.RandomState(0)
    model = CNN()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(1e-3),
        batch_stats=variables["batch_stats"],
    )

    def batch() -> dict:
        return {
            "image": rs.rand(64, 28, 28, 1).astype(np.float32),
            "label": rs.randint(0, 10, 64).astype(np.int32),
        }

    train = jax.device_put([batch() for _ in range(steps_per_epoch)])
    val = jax.device_put([batch() for _ in range(val_batches)])
    return Workload("W2 CNN", state, w2_step, train, epochs, w2_val_step, val)


RNG = jax.random.PRNGKey(0)


def run_bare(w: Workload, keys: list[jax.Array], naive: bool = False) -> None:
    state = jax.tree.map(jnp.copy, w.state)
    jax.block_until_ready(state)
    n = len(w.batches)
    for epoch in range(w.epochs):
        for i, batch in enumerate(w.batches):
            state, metrics = w.step(state, batch, keys[epoch * n + i])
            if naive:
                for value in metrics.values():
                    float(value)
        if w.val_step is not None and w.val_batches is not None:
            for batch in w.val_batches:
                _, metrics = w.val_step(state, batch, RNG)
                if naive:
                    for value in metrics.values():
                        float(value)
    jax.block_until_ready(state)


def run_loop(
    w: Workload, checkpoint_dir: str | None = None, epoch_ends: list[float] | None = None
) -> None:
    def val_data() -> Iterator[dict]:
        return iter(w.val_batches or [])

    def stamp(epoch: int, history: dict) -> None:
        if epoch_ends is not None:
            epoch_ends.append(time.perf_counter())

    state, _ = train_loop(
        w.state,
        w.step,
        lambda: iter(w.batches),
        w.epochs,
        len(w.batches),
        RNG,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=1,
        val_step_fn=w.val_step,
        val_data_iterator=val_data if w.val_step is not None else None,
        val_num_batches=None if w.val_batches is None else len(w.val_batches),
        show_progress=False,
        on_epoch_end=stamp,
    )
    jax.block_until_ready(state)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class SaveTimer:
    """Times how long each checkpoint save blocks the loop (`_Run._save`)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._original = loop_module._Run._save

    def __enter__(self) -> SaveTimer:
        original = self._original
        seconds = self.seconds

        def timed_save(run: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(run, **kwargs)
            finally:
                seconds.append(time.perf_counter() - start)

        loop_module._Run._save = timed_save  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        loop_module._Run._save = self._original  # type: ignore[method-assign]


def measure(w: Workload, rounds: int, with_checkpoints: bool, scratch: str) -> dict[str, Any]:
    keys = [jax.random.fold_in(RNG, s) for s in range(w.steps)]
    jax.block_until_ready(keys)
    counter = iter(range(10**6))
    epoch_ends: dict[str, list[float]] = {}
    returned: dict[str, float] = {}

    def loop(name: str, checkpoints: bool) -> Callable[[], None]:
        def run() -> None:
            ends = epoch_ends[name] = []
            directory = f"{scratch}/{w.name.split()[0]}_{next(counter)}" if checkpoints else None
            run_loop(w, directory, ends)
            returned[name] = time.perf_counter()

        return run

    variants: dict[str, Callable[[], None]] = {
        "bare": lambda: run_bare(w, keys),
        "train_loop": loop("train_loop", False),
        "naive": lambda: run_bare(w, keys, naive=True),
    }
    if with_checkpoints:
        variants["train_loop + ckpt"] = loop("train_loop + ckpt", True)
    for fn in variants.values():  # compile everything, warm caches
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    steady: dict[str, list[float]] = {"train_loop": [], "train_loop + ckpt": []}
    tails: dict[str, list[float]] = {"train_loop": [], "train_loop + ckpt": []}
    names = list(variants)
    with SaveTimer() as saves:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                times[name].append(timed(variants[name]))
                if name in steady:
                    ends = epoch_ends[name]
                    steady[name].append((ends[-1] - ends[0]) / (len(ends) - 1))
                    tails[name].append(returned[name] - ends[-1])
    ratio = {
        name: statistics.median(b / t for b, t in zip(times["bare"], times[name], strict=True))
        for name in names
    }
    result: dict[str, Any] = {
        "steps_per_s": {name: w.steps / statistics.median(ts) for name, ts in times.items()},
        "ratio": ratio,
    }
    if with_checkpoints:
        pairs = list(zip(steady["train_loop"], steady["train_loop + ckpt"], strict=True))
        result["ckpt_steady_ratio"] = statistics.median(a / b for a, b in pairs)
        result["ckpt_run_ratio"] = statistics.median(
            a / b for a, b in zip(times["train_loop"], times["train_loop + ckpt"], strict=True)
        )
        result["save_ms"] = statistics.median(saves.seconds) * 1000
        result["save_ms_max"] = max(saves.seconds) * 1000
        result["epoch_ms"] = statistics.median(steady["train_loop"]) * 1000
        result["final_wait_ms"] = 1000 * (
            statistics.median(tails["train_loop + ckpt"]) - statistics.median(tails["train_loop"])
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="W2's rounds; W1 runs 3x as many")
    parser.add_argument("--quick", action="store_true", help="smaller epochs, 7 rounds")
    args = parser.parse_args()
    rounds = 7 if args.quick else max(7, args.rounds)
    w1 = make_w1(steps_per_epoch=100 if args.quick else 300, epochs=3)
    w2 = make_w2(
        steps_per_epoch=60 if args.quick else 250, val_batches=6 if args.quick else 25, epochs=3
    )
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; medians over {3 * rounds} "
        f"rounds (W1, a round is short) and {rounds} rounds (W2)"
    )
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        rows = []
        for w, ckpt in ((w1, False), (w2, True)):
            result = measure(w, rounds if ckpt else 3 * rounds, ckpt, scratch)
            rows.append((w, result))
    print()
    header = f"{'workload':<10}{'variant':<20}{'steps/s':>10}{'ratio':>9}  target"
    print(header)
    print("-" * len(header))
    for w, result in rows:
        for name, rate in result["steps_per_s"].items():
            ratio = result["ratio"][name]
            target = ""
            if name == "train_loop":
                passed = ratio >= TARGET
                ok &= passed
                target = f">= {TARGET}: {'ok' if passed else 'MISSED'}"
            elif name != "bare":
                target = "(reference)" if name == "naive" else ""
            print(f"{w.name:<10}{name:<20}{rate:>10.1f}{ratio:>9.3f}  {target}")
        if "ckpt_steady_ratio" in result:
            ratio = result["ckpt_steady_ratio"]
            passed = ratio >= TARGET
            ok &= passed
            print(
                f"{w.name:<10}{'ckpt / no ckpt':<20}{'steady':>10}{ratio:>9.3f}  "
                f">= {TARGET}: {'ok' if passed else 'MISSED'}"
            )
            print(
                f"{w.name:<10}{'ckpt / no ckpt':<20}{'whole run':>10}"
                f"{result['ckpt_run_ratio']:>9.3f}  (with the wait for the last save)"
            )
            print(
                f"{'':<10}a save blocks the loop {result['save_ms']:.1f} ms (median; max "
                f"{result['save_ms_max']:.1f} ms) in an epoch of {result['epoch_ms']:.0f} ms;"
                f" the last save adds {result['final_wait_ms']:.0f} ms before train_loop returns"
            )
    print()
    print(
        f"W1: {w1.epochs} epochs x {len(w1.batches)} steps; W2: {w2.epochs} epochs x "
        f"{len(w2.batches)} steps + {len(w2.val_batches or [])} validation batches"
    )
    print("ratio = bare time / variant time in the same round (steps/s relative to bare);")
    print("ckpt / no ckpt steady = epoch time without / with checkpoints, between the first")
    print("and the last epoch end (each save's blocking part and background work included)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
