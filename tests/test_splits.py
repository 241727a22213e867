"""Whole splits, seeking on resume, `python` sources shuffled by (seed, epoch), test data.

A run stopped inside an epoch resumes by seeking (the source is asked for the batches
from the saved position on and gathers only those), validation covers every example of
its split at exact example-weighted means (also on 4 forced devices, with a remainder
smaller than the mesh), and `test:` / `test_fraction` hold out test data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from test_run_sources import regression_arrays

from beagle import data
from beagle.runner import run_spec
from beagle.runner.summary import summary_renderable
from beagle.spec import SpecError, load_spec
from beagle.training import TrainingInterrupted, checkpoint_info, latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
version: 1
name: splits
seed: 2
model:
  class: beagle.models:MLP
  args: {{features: [8, 1]}}
{data}
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
metrics:
  mae: {{fn: mae, args: {{predictions: outputs.outputs, targets: batch.y}}}}
{rest}
"""


def run(folder: Path, data_text: str, rest: str, *overrides: str, restart: bool = False) -> Any:
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(data=textwrap.dedent(data_text).strip(), rest=rest))
    loaded = load_spec(spec, overrides, imports="import")
    return run_spec(loaded, restart=restart, progress=False)


def numpy_mae(state: Any, batch: dict[str, np.ndarray]) -> float:
    predictions = np.asarray(state.apply_fn({"params": state.params}, batch["x"]))
    return float(np.mean(np.abs(predictions.astype(np.float64) - batch["y"])))


# ---------------------------------------------------------------- whole splits


def test_validation_covers_every_example_at_exact_means(in_tmp: Path) -> None:
    np.savez(in_tmp / "train.npz", **regression_arrays(256, 0))
    val = regression_arrays(100, 1)
    np.savez(in_tmp / "val.npz", **val)
    source = data.npz(32, train="train.npz", val="val.npz")
    assert [len(b["y"]) for b in source.val_iterator()] == [32, 32, 32, 4]  # never padded
    spec_data = "data: {source: npz, train: train.npz, val: val.npz, batch_size: 32}"
    result = run(in_tmp, spec_data, "train: {epochs: 1}\nvalidation: {every: 1}\n")
    # The last validation ran on the final state: its mean is the numpy mean over all 100.
    assert result.history["val_mae"][-1] == pytest.approx(numpy_mae(result.state, val), 1e-5)
    assert result.validation == "4 batches: every validation example"

    capped = run(in_tmp, spec_data, "train: {epochs: 1}\nvalidation: {batches: 2}\n", restart=True)
    first = {key: value[:64] for key, value in val.items()}
    assert capped.history["val_mae"][-1] == pytest.approx(numpy_mae(capped.state, first), 1e-5)
    assert capped.validation == "2 of 4 batches (validation.batches)"
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_renderable(capped))
    assert "validation  2 of 4 batches (validation.batches)" in console.export_text()


PARALLEL_SCRIPT = """\
import json, sys
import numpy as np
from beagle.runner import run_spec
from beagle.spec import load_spec
result = run_spec(load_spec(sys.argv[1], imports="import"), restart=False, progress=False)
val = dict(np.load("val.npz"))
params = {"params": result.state.params}
pred = np.asarray(result.state.apply_fn(params, val["x"]), np.float64)
print(json.dumps({"val_mae": result.history["val_mae"][-1],
                  "numpy": float(np.mean(np.abs(pred - val["y"])))}))
"""


def test_remainder_smaller_than_the_mesh_keeps_the_exact_mean(tmp_path: Path) -> None:
    """98 = 3 x 32 + 2: the last validation batch, of 2 rows on 4 devices, is replicated."""
    np.savez(tmp_path / "train.npz", **regression_arrays(128, 0))
    np.savez(tmp_path / "val.npz", **regression_arrays(98, 1))
    data_text = "data: {source: npz, train: train.npz, val: val.npz, batch_size: 32}"
    rest = "train: {epochs: 1}\nvalidation: {every: 1}\nparallel: {data: 4}\n"
    (tmp_path / "spec.yaml").write_text(SPEC.format(data=data_text, rest=rest))
    (tmp_path / "check.py").write_text(PARALLEL_SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run(
        [sys.executable, "check.py", "spec.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["val_mae"] == pytest.approx(got["numpy"], rel=1e-5)


# ---------------------------------------------------------------- seek, not replay


def worker(folder: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "seek_worker.py"), str(folder), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], code: int = 0) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == code, err[-3000:]
    return out


def calls(folder: Path) -> list[dict[str, int]]:
    lines = (folder / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_run_stopped_mid_epoch_seeks_and_resumes_bit_identical(tmp_path: Path) -> None:
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir()
    stopped.mkdir()
    uninterrupted = worker(whole)
    killed = worker(stopped, "--pause-at", "1:3")
    deadline = time.monotonic() + 120
    while not (stopped / "paused").exists():
        assert killed.poll() is None and time.monotonic() < deadline, killed.stderr
        time.sleep(0.02)
    killed.send_signal(signal.SIGTERM)  # saves at the next step boundary: epoch 2, step 4
    (stopped / "go").write_text("")
    assert finish(killed, 3).strip() == "14"
    checkpoint = latest_checkpoint(stopped / "checkpoints")
    assert checkpoint is not None
    info = checkpoint_info(checkpoint)
    assert (info.epoch, info.position) == (1, 4)
    (stopped / "calls.jsonl").unlink(missing_ok=True)
    finish(worker(stopped))
    finish(uninterrupted)
    # The resumed process asked for epoch 1 from batch 4 and gathered only those rows
    # (of both arrays, x and y).
    assert calls(stopped) == [
        {"epoch": 1, "start": 4, "rows": 2 * 6 * 16, "batches": 6},
        {"epoch": 2, "start": 0, "rows": 2 * 10 * 16, "batches": 10},
    ]
    assert [c["start"] for c in calls(whole)] == [0, 0, 0]
    got, want = np.load(stopped / "result.npz"), np.load(whole / "result.npz")
    assert sorted(got.files) == sorted(want.files)
    for key in want.files:
        assert np.array_equal(got[key], want[key]), key  # bit-identical


def test_array_source_seeks_under_a_share_as_well() -> None:
    from beagle.training.sharding import BatchShare, make_mesh

    source = data.synthetic(8, task="regression", examples=80, val_fraction=0.0, seed=1)
    whole = list(source.train_iterator(2))
    mesh = make_mesh(1, 1, jax.devices()[:1])
    source.share_with(BatchShare(mesh))
    sought = list(source.train_iterator(2, start=3))
    assert len(sought) == len(whole) - 3
    for got, want in zip(sought, whole[3:], strict=True):
        assert np.array_equal(np.asarray(got["x"]), want["x"])


# ---------------------------------------------------------------- python sources

SHUFFLED = """\
import numpy as np
YIELDED = []
INTERRUPT_AT = None

def batches(batch_size, epoch, seed):
    rng = np.random.default_rng(99)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    order = np.random.default_rng([seed, epoch]).permutation(96)
    for i in range(0, 96, batch_size):
        if INTERRUPT_AT == (epoch, i // batch_size):
            raise KeyboardInterrupt
        YIELDED.append((epoch, i // batch_size))
        rows = order[i : i + batch_size]
        yield {"x": x[rows], "y": y[rows]}
"""


def test_python_source_shuffled_by_seed_and_epoch_resumes_bit_identical(in_tmp: Path) -> None:
    (in_tmp / "shuffled.py").write_text(SHUFFLED)
    import shuffled  # type: ignore[import-not-found]

    data_text = "data: {source: python, train: 'shuffled:batches', batch_size: 16}"
    rest = "train: {epochs: 3, batches_per_epoch: 6}\ncheckpoint: {every: 1}\n"
    whole = run(in_tmp, data_text, rest, "log.dir=runs/whole")
    order_whole = list(shuffled.YIELDED)
    shuffled.YIELDED.clear()
    shuffled.INTERRUPT_AT = (1, 2)
    with pytest.raises(TrainingInterrupted):
        run(in_tmp, data_text, rest, "log.dir=runs/cut")
    shuffled.INTERRUPT_AT = None
    shuffled.YIELDED.clear()
    resumed = run(in_tmp, data_text, rest, "log.dir=runs/cut")
    assert resumed.resumed_from is not None and resumed.steps == 6 * 3 - 8
    assert resumed.history == whole.history  # bit-identical floats
    leaves = zip(
        jax.tree.leaves(resumed.state.params), jax.tree.leaves(whole.state.params), strict=True
    )
    for got, want in leaves:
        assert np.array_equal(np.asarray(got), np.asarray(want))
    # The function cannot seek: batches 0 and 1 of epoch 1 were drawn again and dropped.
    assert shuffled.YIELDED[0] == (0, 0)  # the sample batch before training
    assert shuffled.YIELDED[1:] == order_whole[7:]


# ---------------------------------------------------------------- test data


def test_test_fraction_is_held_out_disjoint_from_validation() -> None:
    plain = data.digits(32, val_fraction=0.2, seed=5)
    held = data.digits(32, val_fraction=0.2, test_fraction=0.1, seed=5)
    assert held.val is not None and held.test is not None and plain.val is not None
    assert np.array_equal(held.val["image"], plain.val["image"])  # validation unchanged
    assert (held.train_examples, held.val_examples, held.test_examples) == (1257, 360, 180)
    seen = {
        split: {row.tobytes() for row in arrays["image"].reshape(len(arrays["image"]), -1)}
        for split, arrays in (("train", held.train), ("val", held.val), ("test", held.test))
    }
    assert not seen["test"] & seen["val"] and not seen["test"] & seen["train"]
    assert held.test_batches == 6 and [len(b["label"]) for b in held.test_iterator()][-1] == 20
    assert not plain.has_test and held.has_test


def test_test_file_for_npz_and_a_test_function_for_python(in_tmp: Path) -> None:
    np.savez(in_tmp / "train.npz", **regression_arrays(64, 0))
    np.savez(in_tmp / "test.npz", **regression_arrays(10, 2))
    source = data.npz(4, train="train.npz", test="test.npz")
    assert [len(b["x"]) for b in source.test_iterator()] == [4, 4, 2]
    np.savez(in_tmp / "odd.npz", z=np.zeros(3))
    with pytest.raises(data.DataError, match="has keys") as info:
        data.npz(4, train="train.npz", test="odd.npz")
    assert info.value.field == ("data", "test")
    (in_tmp / "testfn.py").write_text(
        "import numpy as np\n"
        "def held(batch_size):\n"
        "    yield {'x': np.ones((batch_size, 3), np.float32)}\n"
    )
    python_source = data.python(4, train="testfn:held", test="testfn:held")
    assert python_source.has_test
    assert [b["x"].shape for b in python_source.test_iterator()] == [(4, 3)]


@pytest.mark.parametrize(
    ("fractions", "words"),
    [
        ("val_fraction: 0.5, test_fraction: 0.5", "add up to 1"),
        ("test_fraction: 1.0", "less than 1.0"),
    ],
)
def test_held_out_fractions_leaving_nothing_are_spec_errors(
    in_tmp: Path, fractions: str, words: str
) -> None:
    spec = in_tmp / "spec.yaml"
    data_text = f"data: {{source: synthetic, task: regression, batch_size: 8, {fractions}}}"
    spec.write_text(SPEC.format(data=data_text, rest="train: {epochs: 1}\n"))
    with pytest.raises(SpecError) as info:
        load_spec(spec, imports="import")
    text = str(info.value)
    assert "data.test_fraction" in text and words in text
    assert "spec.yaml:7:" in text  # the line of the data section
