"""`parallel` on one process with 4 forced CPU devices: real subprocesses, real runs.

The parent pytest process has already initialised jax with one device, so every check
here runs in a subprocess with `XLA_FLAGS=--xla_force_host_platform_device_count=4`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from beagle.training.checkpoint import checkpoint_steps
from beagle.training.sharding import make_placement, split_axis

ROOT = Path(__file__).resolve().parents[1]
FOUR = "--xla_force_host_platform_device_count=4"

SPEC = """\
version: 1
name: par_run
seed: 4
model:
  class: beagle.models:MLP
  args: {{features: [32, 1]}}
data:
  source: synthetic
  task: regression
  examples: 640
  features: 8
  batch_size: {batch}
optimizer: {{name: adam, learning_rate: 0.003}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
metrics:
  mae: {{fn: mae, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: {epochs}}}
validation: {{every: 1}}
checkpoint: {{every: 1, keep: 2}}
log: {{dir: {log_dir}, plot: false}}
{parallel}"""


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = FOUR
    return env


def beagle(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beagle", *args],
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def write(folder: Path, name: str, **fields: Any) -> str:
    values = {"batch": 32, "epochs": 30, "log_dir": "runs/x", "parallel": ""} | fields
    (folder / name).write_text(SPEC.format(**values))
    return name


def history(folder: Path, log_dir: str) -> dict[str, list[float]]:
    data: dict[str, list[float]] = json.loads((folder / log_dir / "history.json").read_text())
    return data


def assert_close(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize(
    ("shape", "fsdp", "axis"),
    [
        ((64, 256), 4, 1),  # the largest axis that divides
        ((256, 64), 4, 0),
        ((128, 128), 4, 1),  # a tie: the last such axis
        ((3, 3, 32, 64), 4, 3),
        ((4, 4100), 4, 1),
        ((4, 4100), 8, None),  # 4100 % 8 and 4 % 8: no axis divides
        ((130, 128), 4, 1),  # 130 does not divide by 4
        ((127, 128), 1, None),  # fsdp 1: replicated
        ((128, 255), 4, 0),  # 255 does not divide by 4
        ((100, 100), 4, None),  # under 2**14 elements: replicated
        ((2**14,), 4, 0),  # exactly 2**14: split
        ((), 4, None),
    ],
)
def test_fsdp_split_axis_rule(shape: tuple[int, ...], fsdp: int, axis: int | None) -> None:
    assert split_axis(shape, fsdp) == axis


def test_placement_on_one_device_is_replicated_and_printable() -> None:
    state = {"params": {"w": np.ones((64, 256), np.float32)}, "step": np.int32(0)}
    placement, placed = make_placement(state, data="auto", fsdp=1)
    assert placement.mesh.shape == {"data": 1, "fsdp": 1}
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(placed))
    table = placement.table(state)
    assert "mesh data=1 x fsdp=1" in table and "['w']" in table and "65536" in table


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One step from the same state, sharded three ways and on one device (one subprocess)."""
    folder = tmp_path_factory.mktemp("parallel_steps")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "parallel_worker.py"), str(folder)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    return result


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("mesh", ["data4", "fsdp4", "data2_fsdp2"])
def test_one_sharded_step_matches_one_device(steps: dict[str, Any], model: str, mesh: str) -> None:
    entry = steps[model][mesh]
    assert entry["metrics_rel"] <= 1e-5  # loss and metrics over the global batch
    assert entry["params_ok"], entry["params_max_abs"]
    # A validation batch of 3 rows (smaller than the mesh) runs replicated, in full.
    assert entry["val_small_rel"] <= 1e-5
    if model == "cnn":  # BatchNorm statistics over the global batch, not per device
        assert entry["batch_stats_rel"] <= 1e-5


def test_whole_batchnorm_cnn_run_differs_no_more_than_a_perturbed_one(
    steps: dict[str, Any],
) -> None:
    """Two epochs (178 steps) of the BatchNorm + dropout CNN on `data: 4`, against one device:
    the history differs at most twice as much as a one-device run from params scaled by
    (1 + 1e-7) differs (SPEC-2 section 1)."""
    runs = steps["cnn_whole_runs"]
    assert runs["perturbed"] > 0
    assert runs["sharded"] <= 2 * runs["perturbed"], runs


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fsdp_splits_large_params_and_their_optimizer_state(
    steps: dict[str, Any], model: str
) -> None:
    big = {"mlp": "['dense_0']['kernel']", "cnn": "['conv_1']['kernel']"}[model]
    for sizes in (steps[model]["fsdp4"]["state_sizes"], steps[model]["fsdp4"]["param_sizes_after"]):
        for path, (size, *shards) in sizes.items():
            assert len(shards) == 4, path
            if path.endswith(big):
                assert shards == [size // 4] * 4, (path, size, shards)  # a quarter each
            else:
                assert shards == [size] * 4, (path, size, shards)  # replicated
    opt = steps[model]["fsdp4"]["opt_sizes"]
    moments = [(size, shards) for path, (size, *shards) in opt.items() if path.endswith(big)]
    assert len(moments) == 2  # adam's mu and nu follow the param
    assert all(shards == [size // 4] * 4 for size, shards in moments)
    # the 2 x 2 mesh splits the same arrays (the param, mu and nu) in halves
    halves = steps[model]["data2_fsdp2"]["state_sizes"]
    split = [(size, shards) for path, (size, *shards) in halves.items() if path.endswith(big)]
    assert len(split) == 3 and all(shards == [size // 2] * 4 for size, shards in split)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_batches_split_over_every_device_and_a_small_one_is_replicated(
    steps: dict[str, Any], model: str
) -> None:
    """The batch axis is split over both mesh axes (a quarter of each leaf per device on
    every mesh of 4); a batch smaller than the mesh is whole on every device."""
    meshes = {mesh: entry for mesh, entry in steps[model].items() if "batch_sizes" in entry}
    assert len(meshes) == 3, steps[model].keys()
    for mesh, entry in meshes.items():
        for path, (size, *shards) in entry["batch_sizes"].items():
            assert shards == [size // 4] * 4, (mesh, path, size, shards)
        for path, (size, *shards) in entry["small_batch_sizes"].items():
            assert shards == [size] * 4, (mesh, path, size, shards)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    """The unmoved run: no `parallel` section, one device."""
    folder = tmp_path_factory.mktemp("one_device")
    done = beagle(folder, "run", write(folder, "spec.yaml", log_dir="runs/one"))
    assert done.returncode == 0, done.stderr[-3000:]
    return history(folder, "runs/one")


def test_whole_run_on_four_devices_matches_one_device(
    tmp_path: Path, one_device: dict[str, list[float]]
) -> None:
    spec = write(tmp_path, "spec.yaml", log_dir="runs/four", parallel="parallel: {data: 4}\n")
    done = beagle(tmp_path, "run", spec)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_close(history(tmp_path, "runs/four"), one_device)


def test_stacked_calls_split_their_batch_axis(
    tmp_path: Path, one_device: dict[str, list[float]]
) -> None:
    """`steps_per_call: 4` stacks 4 batches on a new axis 0; the split is along axis 1."""
    spec = write(tmp_path, "spec.yaml", log_dir="runs/k4", parallel="parallel: {fsdp: 4}\n")
    done = beagle(tmp_path, "run", spec, "--set", "train.steps_per_call=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_close(history(tmp_path, "runs/k4"), one_device)


@pytest.mark.parametrize(
    ("before", "after"),
    [("parallel: {data: 4}\n", ""), ("", "parallel: {data: 2, fsdp: 2}\n")],
    ids=["4-to-1", "1-to-4"],
)
def test_killed_run_resumes_on_another_device_count(
    tmp_path: Path, one_device: dict[str, list[float]], before: str, after: str
) -> None:
    spec = write(tmp_path, "spec.yaml", log_dir="runs/moved", parallel=before)
    process = subprocess.Popen(
        [sys.executable, "-m", "beagle", "run", spec],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "runs/moved/checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "checkpoint_16").is_dir() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    saved = checkpoint_steps(checkpoints)  # complete ones (a kill mid-save leaves a tmp)
    assert saved and max(saved) < 480, saved  # killed before the end (30 epochs x 16 steps)
    write(tmp_path, spec, log_dir="runs/moved", parallel=after)  # moved to other devices
    done = beagle(tmp_path, "run", spec)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming par_run from" in done.stdout + done.stderr
    assert_close(history(tmp_path, "runs/moved"), one_device)


BAD = [
    ("gen", "parallel: {data: 3}\n", 32, "data.batch_size", "sizes that work are 30 or 33"),
    ("check", "parallel: {data: 3}\n", 32, "data.batch_size", "sizes that work are 30 or 33"),
    ("check", "parallel: {data: 2, fsdp: 2}\n", 30, "data.batch_size", "are 28 or 32"),
    ("check", "parallel: {fsdp: 4}\n", 34, "data.batch_size", "are 32 or 36"),  # auto: 1 x 4
    ("check", "parallel: {data: 8}\n", 32, "parallel.data", "has 4"),
    ("run", "parallel: {fsdp: 3}\n", 33, "parallel.fsdp", "divisor of 4"),
    ("run", "parallel: {data: 2}\n", 31, "data.batch_size", "are 30 or 32"),
]


@pytest.mark.parametrize(("command", "parallel", "batch", "where", "words"), BAD)
def test_bad_batch_size_or_device_count_is_a_spec_error(
    tmp_path: Path, command: str, parallel: str, batch: int, where: str, words: str
) -> None:
    spec = write(tmp_path, "spec.yaml", batch=batch, parallel=parallel)
    done = beagle(tmp_path, command, spec)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "spec.yaml:" in done.stderr  # positioned: file:line:col
    assert where in done.stderr and words in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing written
