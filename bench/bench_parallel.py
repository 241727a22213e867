"""Benchmark: the cost of `parallel`'s mesh machinery, and 4 forced CPU devices.

1. One device: the same jitted, state-donating step fed the same host (numpy) batches,
   `unsharded` (called directly, as without a `parallel` section) and `sharded`
   (`parallel: {data: 1}`: state placed by `make_placement`, the step wrapped by
   `Placement.wrap`, each batch placed with `device_put`). Interleaved rounds, order
   rotated; the median of the per-round ratios `sharded steps/s / unsharded steps/s`.
   Target >= 0.97.
2. In a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=4`: steps/s and
   the state's bytes per device for `data: 4` and `fsdp: 4` (not a speed claim: the 4
   devices share the machine's cores).

Workload: MLP 64-512-512-1 (about 300k params), batch 128, MSE, Adam.

    .venv/bin/python bench/bench_parallel.py [--rounds 7] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from beagle.training import TrainState  # noqa: E402
from beagle.training.sharding import make_placement  # noqa: E402

TARGET = 0.97
BATCH = 128


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(512)(x))
        x = nn.relu(nn.Dense(512)(x))
        return nn.Dense(1)(x)


def make_state() -> TrainState:
    model = MLP()
    params = model.init(jax.random.key(0), jnp.zeros((1, 64)))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))


@jax.jit(donate_argnums=0)
def train_step(
    state: TrainState, batch: dict[str, jax.Array], rng_key: jax.Array
) -> tuple[TrainState, dict[str, jax.Array]]:
    def loss_fn(params: Any) -> jax.Array:
        out = state.apply_fn({"params": params}, batch["x"])
        return jnp.mean((out[:, 0] - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


def batches(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        {
            "x": rng.normal(size=(BATCH, 64)).astype(np.float32),
            "y": rng.normal(size=(BATCH,)).astype(np.float32),
        }
        for _ in range(count)
    ]


def timed(step: Callable[..., Any], state: Any, data: list[dict[str, np.ndarray]]) -> float:
    """Steps/s of `step` over `data` (after one warm-up call), blocking once at the end."""
    key = jax.random.key(1)
    state, metrics = step(state, data[0], key)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for batch in data:
        state, metrics = step(state, batch, key)
    jax.block_until_ready((state, metrics))
    return len(data) / (time.perf_counter() - started)


def state_bytes_per_device(state: Any) -> dict[str, int]:
    per: dict[str, int] = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            name = str(shard.device)
            per[name] = per.get(name, 0) + shard.data.nbytes
    return per


def one_device(rounds: int, steps: int) -> float:
    data = batches(steps)
    host = jax.device_get(make_state())
    ratios = []
    for round_ in range(rounds):
        variants = ["unsharded", "sharded"][:: 1 if round_ % 2 == 0 else -1]
        speed = {}
        for variant in variants:
            if variant == "unsharded":
                speed[variant] = timed(train_step, jax.device_put(host), data)
            else:
                placement, state = make_placement(host, data=1, fsdp=1)
                speed[variant] = timed(placement.wrap(train_step), state, data)
        ratios.append(speed["sharded"] / speed["unsharded"])
        print(
            f"round {round_ + 1}: unsharded {speed['unsharded']:.0f} steps/s, "
            f"sharded {speed['sharded']:.0f} steps/s, ratio {ratios[-1]:.3f}"
        )
    return statistics.median(ratios)


def four_devices(steps: int) -> None:
    """Run in the 4-device subprocess: print one JSON line per mesh."""
    data = batches(steps)
    host = jax.device_get(make_state())
    for name, (d, f) in {"data: 4": (4, 1), "fsdp: 4": (1, 4)}.items():
        placement, state = make_placement(host, data=d, fsdp=f)
        per_device = state_bytes_per_device(state)
        speed = timed(placement.wrap(train_step), state, data)
        print(
            json.dumps(
                {
                    "mesh": name,
                    "steps_per_s": speed,
                    "state_bytes_per_device": max(per_device.values()),
                    "state_bytes_total": sum(np.asarray(x).nbytes for x in jax.tree.leaves(host)),
                }
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--four", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.four:
        four_devices(args.steps)
        return 0
    ratio = one_device(args.rounds, args.steps)
    met = ratio >= TARGET
    print(
        f"one device ({jax.default_backend()}): sharded / unsharded = {ratio:.3f} "
        f"(median of {args.rounds}; target >= {TARGET}: {'met' if met else 'MISSED'})"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, __file__, "--four", "--steps", str(args.steps)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        print(done.stderr[-2000:])
        return 1
    print("4 forced CPU devices (they share this machine's cores; not a speed claim):")
    for line in done.stdout.splitlines():
        row = json.loads(line)
        print(
            f"  {row['mesh']}: {row['steps_per_s']:.0f} steps/s, state "
            f"{row['state_bytes_per_device'] / 2**20:.2f} MiB per device of "
            f"{row['state_bytes_total'] / 2**20:.2f} MiB"
        )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
