"""The workloads of `bench_speed.py`: shapes, data and the beagle spec of each.

Imports only NumPy, so the plain-script baseline (`bare_loop.py`) and the driver share
one definition of every workload without importing more than they need.

- W0: logistic regression, 8 features, batch 32, SGD (dispatch-bound: the step is tiny).
- W1: MLP 64-256-256-1, batch 128, MSE, Adam.
- W2: CNN (two blocks of 3x3 conv + BatchNorm + ReLU + 2x2 average pool, 16 and 32
  channels, then a dense head) on 28x28x1, batch 64, cross-entropy + accuracy, Adam, with
  a validation pass over the validation set after each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["WORKLOADS", "Size", "Workload", "make_arrays", "spec_text", "write_npz"]


@dataclass(frozen=True)
class Size:
    """How long a run of a workload is: steps per epoch, epochs, validation batches."""

    steps: int
    epochs: int
    val_batches: int = 0


@dataclass(frozen=True)
class Workload:
    """One workload: its shapes and how long a run is, full and `--quick`."""

    name: str  # W0, W1, W2
    title: str
    batch: int
    full: Size
    quick: Size


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        # The test job: 4 epochs of 1,638 steps (52,416 examples).
        Workload(
            "W0", "logistic regression, 8 features, batch 32", 32, Size(1638, 4), Size(150, 2)
        ),
        # Longer than bench_training.py's 3 x 300 (item 7: steadier figures).
        Workload("W1", "MLP 64-256-256-1, batch 128, MSE, Adam", 128, Size(500, 4), Size(40, 2)),
        Workload(
            "W2",
            "CNN 2x(conv+BN) on 28x28x1, batch 64, CE + accuracy + validation",
            64,
            Size(250, 3, 25),
            Size(12, 2, 3),
        ),
    )
}


def make_arrays(name: str, examples: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs and targets for `examples` examples of workload `name`."""
    rs = np.random.RandomState(seed)
    if name == "W0":
        x = rs.randn(examples, 8).astype(np.float32)
        w = rs.randn(8, 1).astype(np.float32)
        y = (x @ w + 0.5 * rs.randn(examples, 1) > 0).astype(np.float32)
        return {"x": x, "y": y}
    if name == "W1":
        return {
            "x": rs.randn(examples, 64).astype(np.float32),
            "y": rs.randn(examples, 1).astype(np.float32),
        }
    if name == "W2":
        return {
            "image": rs.rand(examples, 28, 28, 1).astype(np.float32),
            "label": rs.randint(0, 10, examples).astype(np.int32),
        }
    raise ValueError(f"unknown workload {name!r}")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


_MODEL = {
    "W0": "  class: beagle.models:MLP\n  args: {features: [1]}\n",
    "W1": "  class: beagle.models:MLP\n  args: {features: [256, 256, 1]}\n",
    "W2": (
        "  class: beagle.models:CNN\n  args: {features: [16, 32], num_classes: 10}\n"
        "  input: batch.image\n  batch_norm: true\n  outputs: logits\n"
    ),
}

_TRAINING = {
    "W0": (
        "optimizer: {name: sgd, learning_rate: 0.1}\n"
        "losses:\n  bce: {fn: sigmoid_binary_cross_entropy,"
        " args: {logits: outputs.outputs, labels: batch.y}}\n"
    ),
    "W1": (
        "optimizer: {name: adam, learning_rate: 1.0e-3}\n"
        "losses:\n  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}\n"
    ),
    "W2": (
        "optimizer: {name: adam, learning_rate: 1.0e-3}\n"
        "losses:\n  ce: {fn: softmax_cross_entropy,"
        " args: {logits: outputs.logits, labels: batch.label}}\n"
        "metrics:\n  accuracy: {fn: accuracy,"
        " args: {logits: outputs.logits, labels: batch.label}}\n"
    ),
}


def spec_text(
    w: Workload,
    size: Size,
    train: Path,
    val: Path | None,
    log_dir: Path,
    steps_per_call: int | str | None,
) -> str:
    """The beagle spec of workload `w` over the .npz files `train` (and `val`)."""
    suffix = "" if steps_per_call is None else f"_k{steps_per_call}"
    lines = [
        "version: 1",
        f"name: bench_{w.name.lower()}{suffix}",
        "seed: 0",
        "model:",
        _MODEL[w.name].rstrip("\n"),
        "data:",
        "  source: npz",
        f"  train: {str(train)!r}",
        *([f"  val: {str(val)!r}"] if val is not None else []),
        f"  batch_size: {w.batch}",
        _TRAINING[w.name].rstrip("\n"),
        "train:",
        f"  epochs: {size.epochs}",
        f"  batches_per_epoch: {size.steps}",
        *([f"  steps_per_call: {steps_per_call}"] if steps_per_call is not None else []),
        *(["validation: {every: 1}"] if val is not None else []),
        f"log: {{dir: {str(log_dir)!r}, plot: false}}",
    ]
    return "\n".join(lines) + "\n"
