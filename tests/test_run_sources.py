"""`run_spec` end to end with the file and user data sources, early stopping and the
checkpoint folder's layout (the newest `keep` plus the best)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np

from beagle.runner import run_spec
from beagle.spec import load_spec
from beagle.training import checkpoint_info, latest_checkpoint

BASE = """\
version: 1
name: sources
seed: 1
model:
  class: beagle.models:MLP
  args: {{features: [16, 1]}}
{data}
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
{rest}
"""


def regression_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return {"x": x, "y": (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)}


def run(folder: Path, data: str, rest: str, *overrides: str):  # type: ignore[no-untyped-def]
    spec = folder / "spec.yaml"
    spec.write_text(BASE.format(data=textwrap.dedent(data).strip(), rest=textwrap.dedent(rest)))
    return run_spec(load_spec(spec, overrides, imports="import"), restart=False, progress=False)


def test_npz_source_trains_and_validates_from_files(in_tmp: Path) -> None:
    np.savez(in_tmp / "train.npz", **regression_arrays(256, 0))
    np.savez(in_tmp / "val.npz", **regression_arrays(64, 1))
    result = run(
        in_tmp,
        "data: {source: npz, train: train.npz, val: val.npz, batch_size: 32}",
        "train: {epochs: 4}\nvalidation: {every: 2}\n",
    )
    assert result.steps == 4 * 8
    assert len(result.history["train_loss"]) == 4 and len(result.history["val_loss"]) == 2
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]
    saved = json.loads((in_tmp / "runs" / "sources" / "history.json").read_text())
    assert saved == result.history


def test_python_source_calls_the_users_function_for_every_epoch(in_tmp: Path) -> None:
    (in_tmp / "userdata.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            CALLS = []

            def batches(batch_size):
                CALLS.append(batch_size)
                rng = np.random.default_rng(len(CALLS))
                while True:
                    x = rng.normal(size=(batch_size, 3)).astype(np.float32)
                    yield {"x": x, "y": x.sum(axis=1, keepdims=True)}
            """
        )
    )
    result = run(
        in_tmp,
        "data: {source: python, train: 'userdata:batches', val: 'userdata:batches',"
        " batch_size: 16}",
        "train: {epochs: 3, batches_per_epoch: 5}\nvalidation: {batches: 2}\n",
    )
    import userdata  # type: ignore[import-not-found]

    assert result.steps == 15
    assert len(result.history["val_loss"]) == 3
    # A fresh iterator for each epoch and each validation, with the spec's batch size,
    # plus one for the batch that initialises the parameters.
    assert userdata.CALLS == [16] * (1 + 3 + 3)


def test_early_stopping_ends_the_run_and_a_rerun_says_complete(in_tmp: Path) -> None:
    (in_tmp / "flat.py").write_text(
        "import jax.numpy as jnp\n\ndef zero(p):\n    return 0.0 * jnp.mean(p)\n"
    )
    data = "data: {source: synthetic, task: regression, examples: 256, features: 3, batch_size: 32}"
    # A loss that never improves: patience 2 stops after epoch 3 of 50.
    rest = """\
    train: {epochs: 50}
    validation: {every: 1}
    early_stopping: {metric: val_flat, mode: min, patience: 2}
    checkpoint: {every: 1, keep: 2}
    """
    spec = in_tmp / "spec.yaml"
    text = BASE.format(data=data, rest=textwrap.dedent(rest))
    text = text.replace(
        "losses:\n",
        "losses:\n  flat: {fn: 'flat:zero', args: {p: outputs.outputs}, weight: 0.0}\n",
    )
    spec.write_text(text)
    result = run_spec(load_spec(spec, imports="import"), restart=False, progress=False)
    assert len(result.history["train_loss"]) == 3
    latest = latest_checkpoint(in_tmp / "runs" / "sources" / "checkpoints")
    assert latest is not None and checkpoint_info(latest).finished
    again = run_spec(load_spec(spec, imports="import"), restart=False, progress=False)
    assert again.status == "already_complete"


def test_checkpoint_folder_keeps_the_newest_plus_the_best(in_tmp: Path) -> None:
    # "Best" is the highest validation loss, which a converging run has at its start: the
    # best checkpoint is then not among the newest two.
    data = "data: {source: synthetic, task: regression, examples: 256, features: 3, batch_size: 32}"
    rest = """\
    train: {epochs: 6}
    validation: {every: 1}
    checkpoint: {every: 1, keep: 2, best: {metric: val_loss, mode: max}}
    """
    result = run(in_tmp, data, rest)
    folder = in_tmp / "runs" / "sources" / "checkpoints"
    steps = sorted(
        int(m.group(1))
        for p in folder.iterdir()
        if (m := re.fullmatch(r"checkpoint_(\d+)", p.name)) is not None
    )
    per_epoch = result.steps // 6
    best_epoch = int(np.argmax(result.history["val_loss"])) + 1
    assert best_epoch < 5
    assert steps == sorted({5 * per_epoch, 6 * per_epoch, best_epoch * per_epoch})
    assert all(not p.name.startswith("checkpoint_") or p.is_dir() for p in folder.iterdir())
