"""Several processes (SPEC-2 section 2): real `beagle run` processes joined through
`jax.distributed` on 127.0.0.1 with gloo, 2 processes x 2 forced CPU devices each, against
one process with 4 devices. See `processes.py` for how they are started."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from processes import finish, free_port, one_process, run, start

from beagle.training.checkpoint import checkpoint_steps

SPEC = """\
version: 1
name: mp
seed: 3
model:
  class: beagle.models:MLP
  args: {{features: [32, 1]}}
data: {data}
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
metrics:
  mae: {{fn: mae, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: {epochs}{train}}}
validation: {validation}
checkpoint: {{dir: {checkpoints}, every: 1, keep: 2}}
log: {{dir: runs/mp, plot: false}}
"""
# 210 training examples in batches of 16: 13 split over the 4 devices and a remainder of 2
# that runs replicated; 70 validation examples: 4 batches and a remainder of 6.
ARRAYS = (
    "{source: synthetic, task: regression, examples: 280, features: 8, batch_size: 16, "
    "val_fraction: 0.25, drop_remainder: false}"
)
EPOCHS = 3

FEED = '''\
import numpy as np

def rows(batch_size, *, epoch, process_index, process_count):
    """32 batches of 16 rows a pass; this process's share of each."""
    data = np.random.default_rng(7).normal(size=(512, 8)).astype(np.float32)
    target = (data @ np.linspace(-1, 1, 8, dtype=np.float32))[:, None]
    order = np.random.default_rng([7, epoch]).permutation(512)
    for start in range(0, 512, 16):
        batch = order[start : start + 16]
        mine = batch[process_index * batch_size : (process_index + 1) * batch_size]
        yield {"x": data[mine], "y": target[mine]}

def everything(batch_size):
    yield from rows(batch_size, epoch=0, process_index=0, process_count=1)
'''


def write_spec(
    folder: Path,
    *,
    epochs: int = EPOCHS,
    data: str = ARRAYS,
    train: str = "",
    validation: str = "{every: 1}",
) -> tuple[Path, Path]:
    """The spec (absolute path) and the shared checkpoint folder it names."""
    checkpoints = folder / "shared" / "checkpoints"
    spec = folder / "spec.yaml"
    values = {"epochs": epochs, "data": data, "train": train, "validation": validation}
    spec.write_text(SPEC.format(checkpoints=checkpoints, **values))
    return spec, checkpoints


def history(folder: Path) -> dict[str, list[float]]:
    data: dict[str, list[float]] = json.loads((folder / "runs/mp/history.json").read_text())
    return data


def assert_close(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    """The history of one process on 4 devices, one epoch longer than the spec."""
    folder = tmp_path_factory.mktemp("one")
    spec, _ = write_spec(folder, epochs=EPOCHS + 1)
    done = one_process(folder / "p0", spec)
    assert done.returncode == 0, done.stderr[-3000:]
    return history(folder / "p0")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    folder = tmp_path_factory.mktemp("two")
    spec, _ = write_spec(folder)
    return folder, run(folder, spec, 2)


def test_two_processes_match_one_process_and_only_process_0_writes(
    two_processes: tuple[Path, list], reference: dict[str, list[float]]
) -> None:
    folder, results = two_processes
    for index, done in enumerate(results):
        assert done.returncode == 0, f"process {index}: {done.stderr[-3000:]}"
    first = {key: values[:EPOCHS] for key, values in reference.items()}
    assert_close(history(folder / "p0"), first)
    # process 0 wrote the run folder and printed the summary; process 1 wrote nothing
    assert {"runs/mp/history.json", "runs/mp/metrics.csv", "runs/mp/spec.yaml"} <= set(
        files(folder / "p0")
    )
    assert files(folder / "p1") == []
    assert "run folder" in results[0].stdout
    # gloo (the CPU collectives) prints its connections itself; beagle prints nothing else
    # (its lines from several threads can interleave, leaving blank ones)
    printed = [line for line in results[1].stdout.splitlines() if line.strip()]
    assert [line for line in printed if "[Gloo]" not in line] == []
    assert "data=4 x fsdp=1" in results[0].stderr
    assert checkpoint_steps(folder / "shared/checkpoints") == [28, 42]


def test_a_run_of_two_processes_continues_on_one(
    two_processes: tuple[Path, list], reference: dict[str, list[float]], tmp_path: Path
) -> None:
    """Resharded on restore: 2 processes x 2 devices, then 1 process x 4 devices."""
    source, results = two_processes
    assert all(done.returncode == 0 for done in results)
    shutil.copytree(source / "shared", tmp_path / "shared")
    shutil.copytree(source / "p0", tmp_path / "p0")
    spec, _ = write_spec(tmp_path)
    done = one_process(tmp_path / "p0", spec, "--set", f"train.epochs={EPOCHS + 1}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming mp from" in done.stderr
    assert_close(history(tmp_path / "p0"), reference)


def test_a_lost_process_ends_the_other_and_a_rerun_resumes(
    tmp_path: Path, reference: dict[str, list[float]]
) -> None:
    heartbeat = 5
    spec, checkpoints = write_spec(tmp_path, epochs=EPOCHS + 1)
    processes = start(tmp_path, spec, 2, "--heartbeat-timeout", str(heartbeat))
    deadline = time.monotonic() + 120
    while not (checkpoints / "checkpoint_14").is_dir():
        assert all(p.poll() is None for p in processes), "a process ended before the kill"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    survivor = finish(processes, timeout=heartbeat + 60)[0]
    waited = time.monotonic() - killed
    assert survivor.returncode != 0
    # in a collective, gloo reports the lost peer; between them, JAX's heartbeat check does
    lost = "another process of this run was lost" in survivor.stderr
    assert lost or "stopped sending heartbeats" in survivor.stderr, survivor.stderr[-3000:]
    assert waited < heartbeat + 15, f"the survivor took {waited:.0f} s to end"
    saved = checkpoint_steps(checkpoints)
    assert saved and max(saved) < 56, saved  # the run did not finish

    results = run(tmp_path, spec, 2)
    for index, done in enumerate(results):
        assert done.returncode == 0, f"process {index}: {done.stderr[-3000:]}"
    assert "resuming mp from" in results[0].stderr
    assert_close(history(tmp_path / "p0"), reference)


def test_sigterm_to_one_process_stops_all_at_one_step_and_a_rerun_resumes(
    tmp_path: Path, reference: dict[str, list[float]]
) -> None:
    """SIGTERM to one process (a host being preempted): all of them agree on a step, save
    it together and exit 3; the same commands then resume from it."""
    spec, checkpoints = write_spec(tmp_path, epochs=EPOCHS + 1)
    processes = start(tmp_path, spec, 2)
    deadline = time.monotonic() + 120
    while not (checkpoints / "checkpoint_14").is_dir():
        assert all(p.poll() is None for p in processes), "a process ended before the signal"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGTERM)
    results = finish(processes, timeout=120)
    for index, done in enumerate(results):
        assert done.returncode == 3, f"process {index}: {done.stderr[-3000:]}"
    saved = max(checkpoint_steps(checkpoints))
    assert 14 <= saved < 56
    assert f"checkpoint saved to {checkpoints / f'checkpoint_{saved}'}" in results[0].stderr

    results = run(tmp_path, spec, 2)
    for index, done in enumerate(results):
        assert done.returncode == 0, f"process {index}: {done.stderr[-3000:]}"
    assert f"resuming mp from {checkpoints / f'checkpoint_{saved}'}" in results[0].stderr
    assert_close(history(tmp_path / "p0"), reference)


def test_python_source_gives_each_process_its_rows(tmp_path: Path) -> None:
    (tmp_path / "feed.py").write_text(FEED)
    data = "{source: python, train: 'feed:rows', val: 'feed:rows', batch_size: 16}"
    train = ", batches_per_epoch: 32"
    spec, _ = write_spec(tmp_path, data=data, train=train, validation="{every: 1, batches: 8}")
    for name in ("one", "p0", "p1"):
        (tmp_path / name).mkdir()
        shutil.copy(tmp_path / "feed.py", tmp_path / name)
    one = one_process(tmp_path / "one", spec, "--set", f"checkpoint.dir={tmp_path / 'solo'}")
    assert one.returncode == 0, one.stderr[-3000:]
    results = run(tmp_path, spec, 2)
    assert results[0].returncode == 0, results[0].stderr[-3000:]
    assert_close(history(tmp_path / "p0"), history(tmp_path / "one"))


def test_python_source_without_process_index_is_refused(tmp_path: Path) -> None:
    """`feed:everything` takes no `process_index`: exit 2 on both, nothing written."""
    data = "{source: python, train: 'feed:everything', batch_size: 16}"
    spec, checkpoints = write_spec(
        tmp_path, data=data, train=", batches_per_epoch: 8", validation="null"
    )
    for name in ("p0", "p1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "feed.py").write_text(FEED)
    results = run(tmp_path, spec, 2)
    for done in results:
        assert done.returncode == 2, done.stderr[-3000:]
        assert "spec.yaml:" in done.stderr and "data.train" in done.stderr
        assert "process_index" in done.stderr
    assert files(tmp_path / "p0") == files(tmp_path / "p1") == ["feed.py"]
    assert not checkpoints.exists()


def test_processes_that_see_different_checkpoints_refuse_to_start(tmp_path: Path) -> None:
    """A `checkpoint.dir` that is not shared: process 0 finds a checkpoint, process 1 none."""
    spec, _ = write_spec(tmp_path, epochs=1)
    local = ("--set", "checkpoint.dir=checkpoints")  # relative: each process its own folder
    done = one_process(tmp_path / "p0", spec, *local, devices=4)
    assert done.returncode == 0, done.stderr[-3000:]
    before = files(tmp_path / "p0")
    results = run(tmp_path, spec, 2, *local, "--set", "train.epochs=2")
    for done in results:
        assert done.returncode == 2, done.stderr[-3000:]
        assert "process 0: checkpoint_14, process 1: none" in done.stderr
        assert "shared filesystem" in done.stderr
    assert files(tmp_path / "p0") == before and files(tmp_path / "p1") == []


def test_an_unreachable_coordinator_is_exit_2_within_the_connect_timeout(
    tmp_path: Path,
) -> None:
    spec, _ = write_spec(tmp_path)
    port = free_port()  # nobody listens there
    # process 1 alone: process 0, which would host the coordinator, is never started
    processes = start(tmp_path, spec, 2, "--connect-timeout", "3", port=port, only=(1,))
    (done,) = finish(processes, timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"cannot reach the coordinator 127.0.0.1:{port} within 3 s" in done.stderr
    assert done.seconds < 3 + 10  # beagle's own start-up included
    assert files(tmp_path / "p1") == []


def test_process_0_alone_gives_up_after_the_connect_timeout(tmp_path: Path) -> None:
    spec, _ = write_spec(tmp_path)
    (done,) = finish(start(tmp_path, spec, 2, "--connect-timeout", "3", only=(0,)), timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "waited 3 s" in done.stderr and "for the other processes to join" in done.stderr
    assert files(tmp_path / "p0") == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--coordinator", "127.0.0.1:1234"], "needs --num-processes and --process-id"),
        (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (
            ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            "between 0 and 1",
        ),
        (["--distributed", "auto", "--process-id", "0"], "leave out --process-id"),
        (["--distributed", "auto", "--heartbeat-timeout", "0"], "at least 1 second"),
    ],
)
def test_bad_process_options_are_usage_errors(tmp_path: Path, args: list[str], words: str) -> None:
    spec, _ = write_spec(tmp_path)
    done = one_process(tmp_path / "p0", spec, *args, devices=1)
    assert done.returncode == 2, done.stderr[-3000:]
    assert words in done.stderr
    assert files(tmp_path / "p0") == []
