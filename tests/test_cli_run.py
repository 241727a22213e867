"""`beagle run` as a user runs it: real subprocesses, real signals, exit codes 0/1/2/3."""

from __future__ import annotations

import json
import os
import random
import shutil
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

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
version: 1
name: cli_tiny
seed: 5
model:
  class: beagle.models:MLP
  args: {features: [32, 32, 1]}
data:
  source: synthetic
  task: regression
  examples: 1280
  features: 8
  batch_size: 32
optimizer: {name: adam, learning_rate: 0.003}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 30}
validation: {every: 1}
checkpoint: {every: 1, keep: 2}
log: {plot: false}
"""


def beagle_command() -> list[str]:
    script = Path(sys.executable).with_name("beagle")
    return [str(script)] if script.exists() else [sys.executable, "-m", "beagle"]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def beagle(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*beagle_command(), *args],
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*beagle_command(), *args],
        cwd=folder,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def final_state(folder: Path, spec: str, *overrides: str) -> Any:
    """The state in the newest checkpoint of a run, restored into the spec's own structure."""
    from beagle.compiler import compile_spec
    from beagle.runner import trace, wiring
    from beagle.spec import load_spec
    from beagle.training import latest_checkpoint, load_checkpoint

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        loaded = load_spec(spec, overrides, imports="import")
        module = wiring.import_module_from_text(
            compile_spec(loaded.spec, loaded.source_name), "_cli_test_module", "<test>"
        )
        wired = trace.wire(loaded, module)
        checkpoint_dir = (
            Path(
                loaded.spec.log.dir
                if loaded.spec.log and loaded.spec.log.dir
                else f"runs/{loaded.spec.name}"
            )
            / "checkpoints"
        )
        latest = latest_checkpoint(checkpoint_dir)
        assert latest is not None
        return load_checkpoint(latest, wired.state)
    finally:
        os.chdir(cwd)


def assert_same_state(a: Any, b: Any) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of SPEC, to compare interrupted ones against."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "spec.yaml").write_text(SPEC)
    done = beagle(folder, "run", "spec.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr
    return folder


def test_run_exits_0_prints_summary_and_rerun_says_complete(reference: Path) -> None:
    history = json.loads((reference / "runs/cli_tiny/history.json").read_text())
    assert len(history["train_loss"]) == 30 and len(history["val_loss"]) == 30
    again = beagle(reference, "run", "spec.yaml", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout + again.stderr


def test_sigkill_at_an_arbitrary_moment_then_rerun_matches(reference: Path, tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    process = start(tmp_path, "run", "spec.yaml", "--no-progress")
    checkpoints = tmp_path / "runs/cli_tiny/checkpoints"
    wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob("checkpoint_*")))
    time.sleep(random.uniform(0.0, 1.0))  # anywhere: mid-step, mid-save, between epochs
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL  # it was still training when killed
    resumed = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "runs/cli_tiny/history.json").read_text() == (
        reference / "runs/cli_tiny/history.json"
    ).read_text()
    assert_same_state(final_state(tmp_path, "spec.yaml"), final_state(reference, "spec.yaml"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_exits_3_and_rerun_continues_exactly(
    reference: Path, tmp_path: Path, signum: int
) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    process = start(tmp_path, "run", "spec.yaml", "--no-progress")
    history = tmp_path / "runs/cli_tiny/history.json"
    wait_for(lambda: history.is_file())
    time.sleep(random.uniform(0.0, 0.3))
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "re-run" in stderr
    resumed = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout + resumed.stderr
    assert history.read_text() == (reference / "runs/cli_tiny/history.json").read_text()
    assert_same_state(final_state(tmp_path, "spec.yaml"), final_state(reference, "spec.yaml"))


def test_changed_module_refuses_resume_with_exit_2(reference: Path, tmp_path: Path) -> None:
    shutil.copytree(reference / "runs", tmp_path / "runs")
    (tmp_path / "spec.yaml").write_text(SPEC)
    refused = beagle(
        tmp_path,
        "run",
        "spec.yaml",
        "--set",
        "optimizer.learning_rate=0.01",
        "--set",
        "train.epochs=31",
    )
    assert refused.returncode == 2, refused.stderr
    assert "optimizer.learning_rate" in refused.stderr and "--restart" in refused.stderr
    assert "train.epochs" not in refused.stderr  # it does not block a resume
    assert "--restart --set init.from=" in refused.stderr
    assert "Traceback" not in refused.stderr
    restarted = beagle(
        tmp_path, "run", "spec.yaml", "--set", "optimizer.learning_rate=0.01", "--restart"
    )
    assert restarted.returncode == 0, restarted.stderr
    history = json.loads((tmp_path / "runs/cli_tiny/history.json").read_text())
    reference_history = json.loads((reference / "runs/cli_tiny/history.json").read_text())
    assert len(history["train_loss"]) == 30
    assert history["train_loss"][0] != reference_history["train_loss"][0]  # started over
    assert "Traceback" not in refused.stderr
    # one generation kept: the replaced run's files and checkpoints, as they were
    kept = tmp_path / "runs/cli_tiny.previous"
    assert "moved the checkpoints to runs/cli_tiny/checkpoints.previous" in restarted.stderr
    assert "the run's files to runs/cli_tiny.previous" in restarted.stderr
    assert (kept / "history.json").read_text() == (
        reference / "runs/cli_tiny/history.json"
    ).read_text()
    assert "learning_rate: 0.01" not in (kept / "spec.yaml").read_text()
    old_steps = sorted(p.name for p in (reference / "runs/cli_tiny/checkpoints").iterdir())
    kept_checkpoints = tmp_path / "runs/cli_tiny/checkpoints.previous"
    assert sorted(p.name for p in kept_checkpoints.iterdir()) == old_steps


def test_invalid_spec_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(SPEC.replace("epochs: 30", "epochs: 0"))
    bad = beagle(tmp_path, "run", "bad.yaml")
    assert bad.returncode == 2
    assert "bad.yaml:" in bad.stderr and "train.epochs" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_user_loss_raising_is_a_trace_problem_at_its_fn(tmp_path: Path) -> None:
    (tmp_path / "userloss.py").write_text(
        textwrap.dedent(
            """\
            def broken(predictions, targets):
                raise ValueError("my loss is broken on purpose")
            """
        )
    )
    (tmp_path / "spec.yaml").write_text(
        SPEC.replace("fn: mse,", "fn: 'userloss:broken',").replace("epochs: 30", "epochs: 1")
    )
    failed = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert failed.returncode == 2, failed.stderr
    assert "spec.yaml:15:" in failed.stderr and "losses.mse.fn" in failed.stderr
    assert "my loss is broken on purpose" in failed.stderr and "userloss.py:2" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "runs").exists()


DATA_CODE = """\
import numpy as np


def flaky(batch_size):
    for i in range(4):
        if i == 2:
            raise ValueError("my data went bad on purpose")
        x = np.ones((batch_size, 8), "float32")
        yield {"x": x, "y": x.sum(1, keepdims=True)}


def short(batch_size):
    x = np.ones((batch_size, 8), "float32")
    yield {"x": x, "y": x.sum(1, keepdims=True)}
"""


def test_user_data_raising_exits_1_with_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "userdata.py").write_text(DATA_CODE)
    python_data = (
        SPEC.replace(
            "  source: synthetic\n  task: regression\n  examples: 1280\n  features: 8\n",
            "  source: python\n  train: userdata:flaky\n",
        )
        .replace("validation: {every: 1}\n", "")
        .replace("epochs: 30", "epochs: 1, batches_per_epoch: 4")
    )
    (tmp_path / "spec.yaml").write_text(python_data)
    failed = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert failed.returncode == 1, failed.stderr
    assert "my data went bad on purpose" in failed.stderr
    assert "userdata.py" in failed.stderr and "Traceback" in failed.stderr
    (tmp_path / "spec.yaml").write_text(python_data.replace("userdata:flaky", "userdata:short"))
    short = beagle(tmp_path, "run", "spec.yaml", "--no-progress", "--restart")
    assert short.returncode == 1, short.stderr
    assert "training failed" in short.stderr and "gave only 1 of" in short.stderr
    assert "Traceback" not in short.stderr


def test_non_finite_loss_exits_1_naming_epoch_step_and_terms(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(
        SPEC.replace("learning_rate: 0.003", "learning_rate: 1.0e+30").replace(
            "epochs: 30", "epochs: 2"
        )
    )
    failed = beagle(tmp_path, "run", "spec.yaml", "--no-progress")
    assert failed.returncode == 1, failed.stderr
    assert "non-finite" in failed.stderr and "epoch 1" in failed.stderr
    assert "step" in failed.stderr and "loss term 'mse'" in failed.stderr


def test_interrupt_without_checkpoints_says_a_rerun_starts_over(tmp_path: Path) -> None:
    spec = SPEC.replace("checkpoint: {every: 1, keep: 2}\n", "")
    assert "checkpoint" not in spec
    (tmp_path / "spec.yaml").write_text(spec.replace("epochs: 30", "epochs: 3000"))
    process = start(tmp_path, "run", "spec.yaml", "--no-progress")
    history = tmp_path / "runs/cli_tiny/history.json"
    wait_for(lambda: history.is_file())
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "re-running starts over" in stderr and "continue" not in stderr.splitlines()[-1]
