"""Benchmark: generated NNX steps (`model.kind: nnx`) against their linen twins.

For each workload, beagle compiles two specs that differ only in the model's kind (the
built-in `beagle.models` class or its `beagle.nnx_models` twin, same arguments) and runs
each generated `train_step` (and `val_step`) under `train_loop` on the same on-device
batches. The two run interleaved in every round of one process, their order alternating,
so a noisy moment hits both; each round gives the ratio of steps/s `nnx / linen`, and the
median over the rounds is reported with its spread (lowest and highest round).

W1: MLP 64→256→256→1, batch 128, MSE, Adam. W2: CNN (two 3×3 conv + BatchNorm + ReLU +
avg-pool blocks, 16 and 32 channels, dropout off) on 28×28×1, batch 64, cross-entropy +
accuracy, Adam, a validation pass per epoch. Target: nnx / linen >= 0.97 on both.

Nothing here assumes a CPU: on a GPU the batches live on the GPU and the ratio is the
same quotient (`JAX_PLATFORMS=cuda .venv/bin/python bench/bench_nnx.py`).

    .venv/bin/python bench/bench_nnx.py [--rounds 9] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from beagle.compiler import compile_spec  # noqa: E402
from beagle.runner import wiring  # noqa: E402
from beagle.spec import load_spec  # noqa: E402
from beagle.training import train_loop  # noqa: E402

TARGET = 0.97
KINDS = ("linen", "nnx")
CLASSES = {"linen": "beagle.models", "nnx": "beagle.nnx_models"}

W1_SPEC = """\
version: 1
name: bench_w1_{kind}
model:
  kind: {kind}
  class: {package}:MLP
  args: {{features: [256, 256, 1]}}
data: {{source: synthetic, task: regression, features: 64, batch_size: 128}}
optimizer: {{name: adam, learning_rate: 1.0e-3}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: 1}}
"""

W2_SPEC = """\
version: 1
name: bench_w2_{kind}
model:
  kind: {kind}
  class: {package}:CNN
  args: {{features: [16, 32], num_classes: 10}}
  input: batch.image
  batch_norm: true
  outputs: logits
data: {{source: digits, batch_size: 64}}
optimizer: {{name: adam, learning_rate: 1.0e-3}}
losses:
  ce: {{fn: softmax_cross_entropy, args: {{logits: outputs.logits, labels: batch.label}}}}
metrics:
  accuracy: {{fn: accuracy, args: {{logits: outputs.logits, labels: batch.label}}}}
train: {{epochs: 1}}
validation: {{every: 1}}
"""


@dataclass
class Twin:
    """One kind's generated module and the state `beagle run` would build for it."""

    module: Any
    state: Any


@dataclass
class Workload:
    name: str
    twins: dict[str, Twin]
    batches: list[dict]
    epochs: int
    val_batches: list[dict] | None = None

    @property
    def steps(self) -> int:
        return self.epochs * len(self.batches)


def build(spec_text: str, kind: str, batch: dict, folder: Path) -> Twin:
    """Compile the spec for `kind` and build its state on `batch`, as `beagle run` does."""
    text = spec_text.format(kind=kind, package=CLASSES[kind])
    path = folder / f"{kind}.yaml"
    path.write_text(text)
    loaded = load_spec(path, imports="import")
    module = wiring.import_module_from_text(
        compile_spec(loaded.spec, loaded.source_name), f"_bench_{loaded.spec.name}", str(path)
    )
    model = wiring.build_model(loaded, module)
    init_key, _ = wiring.root_keys(0)
    variables = wiring.init_variables(loaded, model, batch, init_key)
    return Twin(module, wiring.build_state(loaded, model, variables, module))


def make_w1(steps_per_epoch: int, epochs: int, folder: Path) -> Workload:
    rs = np.random.RandomState(0)
    batches = [
        {"x": rs.randn(128, 64).astype(np.float32), "y": rs.randn(128, 1).astype(np.float32)}
        for _ in range(steps_per_epoch)
    ]
    twins = {kind: build(W1_SPEC, kind, batches[0], folder) for kind in KINDS}
    return Workload("W1 MLP", twins, jax.device_put(batches), epochs)


def make_w2(steps_per_epoch: int, val_batches: int, epochs: int, folder: Path) -> Workload:
    rs = np.random.RandomState(0)

    def batch() -> dict:
        return {
            "image": rs.rand(64, 28, 28, 1).astype(np.float32),
            "label": rs.randint(0, 10, 64).astype(np.int32),
        }

    train = [batch() for _ in range(steps_per_epoch)]
    val = [batch() for _ in range(val_batches)]
    twins = {kind: build(W2_SPEC, kind, train[0], folder) for kind in KINDS}
    return Workload("W2 CNN", twins, jax.device_put(train), epochs, jax.device_put(val))


RNG = jax.random.PRNGKey(0)


def run_loop(w: Workload, kind: str) -> None:
    twin = w.twins[kind]

    def val_data() -> Iterator[dict]:
        return iter(w.val_batches or [])

    state, _ = train_loop(
        jax.tree.map(jnp.copy, twin.state),  # train_step donates its state
        twin.module.train_step,
        lambda: iter(w.batches),
        w.epochs,
        len(w.batches),
        RNG,
        val_step_fn=twin.module.val_step if w.val_batches else None,
        val_data_iterator=val_data if w.val_batches else None,
        val_num_batches=len(w.val_batches) if w.val_batches else None,
        show_progress=False,
    )
    jax.block_until_ready(state)


def timed(w: Workload, kind: str) -> float:
    start = time.perf_counter()
    run_loop(w, kind)
    return time.perf_counter() - start


def measure(w: Workload, rounds: int) -> dict[str, Any]:
    for kind in KINDS:  # compile, warm caches
        run_loop(w, kind)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for r in range(rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            times[kind].append(timed(w, kind))
    ratios = [lin / nnx for lin, nnx in zip(times["linen"], times["nnx"], strict=True)]
    return {
        "steps_per_s": {kind: w.steps / statistics.median(ts) for kind, ts in times.items()},
        "ratio": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="W2's rounds; W1 runs 3x as many")
    parser.add_argument("--quick", action="store_true", help="smaller epochs, 5 rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else max(5, args.rounds)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        w1 = make_w1(steps_per_epoch=50 if args.quick else 300, epochs=3, folder=folder)
        w2 = make_w2(
            steps_per_epoch=20 if args.quick else 250,
            val_batches=4 if args.quick else 25,
            epochs=3,
            folder=folder,
        )
        print(
            f"jax {jax.__version__} on {jax.devices()[0].platform}; medians over "
            f"{3 * rounds} rounds (W1) and {rounds} rounds (W2)"
        )
        rows = [(w1, measure(w1, 3 * rounds)), (w2, measure(w2, rounds))]
    print()
    header = (
        f"{'workload':<10}{'linen steps/s':>15}{'nnx steps/s':>13}{'nnx/linen':>11}"
        f"{'spread':>16}  target"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for w, result in rows:
        passed = result["ratio"] >= TARGET
        ok &= passed
        rates = result["steps_per_s"]
        spread = f"{result['low']:.3f}-{result['high']:.3f}"
        print(
            f"{w.name:<10}{rates['linen']:>15.1f}{rates['nnx']:>13.1f}{result['ratio']:>11.3f}"
            f"{spread:>16}  >= {TARGET}: {'ok' if passed else 'MISSED'}"
        )
    print()
    print(
        f"W1: {w1.epochs} epochs x {len(w1.batches)} steps; W2: {w2.epochs} epochs x "
        f"{len(w2.batches)} steps + {len(w2.val_batches or [])} validation batches"
    )
    print("nnx/linen = linen time / nnx time in the same round (median; spread: lowest-highest)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
