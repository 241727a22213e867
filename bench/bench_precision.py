"""Benchmark: `precision` bfloat16 (and float16) against float32, steps/s under `train_loop`.

Each workload is compiled by beagle from a spec three times, differing only in
`precision` (absent: float32; `{compute: bfloat16}`; `{compute: float16}`, which adds
dynamic loss scaling), and run under `train_loop` on the same on-device batches. The
variants run interleaved, their order rotated every round, so a noisy moment hits them
all; each round gives the ratio `float32 time / variant time` (steps/s relative to
float32), reported as the median with the smallest and largest round.

W1: the built-in MLP 64-256-256-1, batch 128, MSE, Adam. W2: the built-in CNN (two 3x3
conv + BatchNorm + ReLU + avg-pool blocks, 16 and 32 channels) on 28x28x1, batch 64,
cross-entropy + accuracy, Adam. Nothing here assumes a CPU: on a GPU the same script
measures the GPU (`jax.devices()[0]`).

A CPU has no fast bfloat16 or float16 arithmetic: XLA converts to float32 and back around
the operations, so there the lower precisions are expected to be slower (ratio < 1). On
GPUs with bfloat16 tensor cores (A100, H100/H200) they are expected to be faster, the
more so the larger the matrix multiplies; W1 and W2 are small.

    .venv/bin/python bench/bench_precision.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from beagle.compiler import compile_spec  # noqa: E402
from beagle.runner.wiring import import_module_from_text  # noqa: E402
from beagle.spec.models import Spec  # noqa: E402
from beagle.training import TrainState, initial_dynamic_scale, train_loop  # noqa: E402

PRECISIONS = ("float32", "bfloat16", "float16")

W1_SPEC: dict[str, Any] = {
    "version": 1,
    "name": "w1",
    "model": {"class": "beagle.models:MLP", "args": {"features": [256, 256, 1]}},
    "data": {"source": "synthetic", "task": "regression", "features": 64, "batch_size": 128},
    "optimizer": {"name": "adam", "learning_rate": 1.0e-3},
    "losses": {
        "mse": {"fn": "mse", "args": {"predictions": "outputs.outputs", "targets": "batch.y"}}
    },
    "train": {"epochs": 1},
}

W2_SPEC: dict[str, Any] = {
    "version": 1,
    "name": "w2",
    "model": {
        "class": "beagle.models:CNN",
        "args": {"features": [16, 32], "num_classes": 10},
        "input": "batch.image",
        "batch_norm": True,
        "outputs": "logits",
    },
    "data": {"source": "digits", "batch_size": 64},
    "optimizer": {"name": "adam", "learning_rate": 1.0e-3},
    "losses": {
        "ce": {
            "fn": "softmax_cross_entropy",
            "args": {"logits": "outputs.logits", "labels": "batch.label"},
        }
    },
    "metrics": {
        "accuracy": {
            "fn": "accuracy",
            "args": {"logits": "outputs.logits", "labels": "batch.label"},
        }
    },
    "train": {"epochs": 1},
}


@dataclass
class Variant:
    """One workload compiled at one precision: its step and initial state."""

    precision: str
    step: Callable[..., Any]
    state: TrainState


def compile_variant(base: dict[str, Any], precision: str, sample: dict[str, Any]) -> Variant:
    document = dict(base, name=f"{base['name']}_{precision}")
    if precision != "float32":
        document["precision"] = {"compute": precision}
    spec = Spec.model_validate(document)
    module = import_module_from_text(
        compile_spec(spec, f"{spec.name}.yaml"), f"_bench_{spec.name}", f"<{spec.name}>"
    )
    model = module.make_model()
    inputs = sample["image"] if "image" in sample else sample["x"]
    variables = model.init(jax.random.key(0), inputs, train=False)
    extras: dict[str, Any] = {}
    if "batch_stats" in variables:
        extras["batch_stats"] = variables["batch_stats"]
    if precision == "float16":
        extras["dynamic_scale"] = initial_dynamic_scale()
    state = TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=module.make_optimizer(), **extras
    )
    return Variant(precision, module.train_step, state)


def w1_batches(steps: int) -> list[dict[str, Any]]:
    rs = np.random.RandomState(0)
    return [
        {"x": rs.randn(128, 64).astype(np.float32), "y": rs.randn(128, 1).astype(np.float32)}
        for _ in range(steps)
    ]


def w2_batches(steps: int) -> list[dict[str, Any]]:
    rs = np.random.RandomState(0)
    return [
        {
            "image": rs.rand(64, 28, 28, 1).astype(np.float32),
            "label": rs.randint(0, 10, 64).astype(np.int32),
        }
        for _ in range(steps)
    ]


def run(variant: Variant, batches: list[dict[str, Any]], epochs: int) -> float:
    """Seconds for `epochs` epochs under `train_loop` (the state copied: it is donated)."""
    state = jax.tree.map(jnp.copy, variant.state)
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, _ = train_loop(
        state,
        variant.step,
        lambda: iter(batches),
        epochs,
        len(batches),
        jax.random.key(0),
        show_progress=False,
    )
    jax.block_until_ready(state)
    return time.perf_counter() - start


def measure(
    name: str, base: dict[str, Any], batches: list[dict[str, Any]], epochs: int, rounds: int
) -> list[tuple[str, float, float, float, float]]:
    """(precision, steps/s, median ratio, min ratio, max ratio) per precision."""
    variants = [compile_variant(base, p, batches[0]) for p in PRECISIONS]
    for variant in variants:  # compile, warm caches
        run(variant, batches, 1)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for variant in order:
            times[variant.precision].append(run(variant, batches, epochs))
        print(f"  {name} round {r + 1}/{rounds}", file=sys.stderr)
    steps = epochs * len(batches)
    rows = []
    for precision in PRECISIONS:
        ratios = [a / b for a, b in zip(times["float32"], times[precision], strict=True)]
        rows.append(
            (
                precision,
                steps / statistics.median(times[precision]),
                statistics.median(ratios),
                min(ratios),
                max(ratios),
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="shorter epochs, 3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else max(3, args.rounds)
    w1 = jax.device_put(w1_batches(50 if args.quick else 300))
    w2 = jax.device_put(w2_batches(20 if args.quick else 150))
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); {rounds} rounds")
    results = [
        ("W1 MLP", measure("W1", W1_SPEC, w1, 2, rounds)),
        ("W2 CNN", measure("W2", W2_SPEC, w2, 2, rounds)),
    ]
    print()
    header = f"{'workload':<10}{'compute':<10}{'steps/s':>10}{'ratio':>8}  spread (min-max)"
    print(header)
    print("-" * len(header))
    for name, rows in results:
        for precision, rate, ratio, low, high in rows:
            spread = "" if precision == "float32" else f"{low:.3f}-{high:.3f}"
            print(f"{name:<10}{precision:<10}{rate:>10.1f}{ratio:>8.3f}  {spread}")
    print()
    print("ratio = float32 time / variant time in the same round (steps/s relative to float32);")
    print("float16 includes dynamic loss scaling. On a CPU, bfloat16 and float16 are expected")
    print("to be slower (no native arithmetic); on a GPU with bfloat16 tensor cores, faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
