"""Checkpoints written by train_loop: layout, retention, records, resume, killed saves."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

import jax
import pytest
from test_training_helpers import (
    data_fn,
    leaves_equal,
    make_state,
    probe_batches,
    probe_state,
    probe_step,
    train_step,
    val_step,
)

from beagle.training import (
    EarlyStopping,
    TrainState,
    checkpoint_info,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    train_loop,
)

KEY = jax.random.PRNGKey(0)
REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _train(directory: Path | None, epochs: int = 3, **options: Any) -> tuple[TrainState, dict]:
    return train_loop(
        make_state(),
        train_step,
        options.pop("data", data_fn),
        epochs,
        10,
        KEY,
        checkpoint_dir=directory,
        val_step_fn=val_step,
        val_data_iterator=lambda: data_fn(0),
        val_num_batches=3,
        show_progress=False,
        **options,
    )


@pytest.fixture(scope="module")
def reference() -> tuple[TrainState, dict]:
    """An uninterrupted 3-epoch run: what every interrupted-and-resumed run must equal."""
    return _train(None)


def _probe(directory: Path, per_epoch: list[float], **options: Any) -> dict:
    _, history = train_loop(
        probe_state(),
        probe_step,
        lambda epoch: iter(probe_batches([[per_epoch[epoch]]])),
        len(per_epoch),
        1,
        KEY,
        checkpoint_dir=directory,
        show_progress=False,
        **options,
    )
    return history


def test_checkpoints_every_n_epochs_and_at_the_end(tmp_path: Path) -> None:
    _probe(tmp_path, [1.0] * 5, checkpoint_every=2, keep=10)
    assert _folders(tmp_path) == ["checkpoint_2", "checkpoint_4", "checkpoint_5"]
    assert not checkpoint_info(tmp_path / "checkpoint_4").finished
    assert checkpoint_info(tmp_path / "checkpoint_5").finished


@pytest.mark.parametrize(
    ("mode", "kept"),
    [
        ("min", ["checkpoint_2", "checkpoint_4", "checkpoint_5"]),
        ("max", ["checkpoint_4", "checkpoint_5"]),
    ],
)
def test_keeps_the_newest_plus_the_best(tmp_path: Path, mode: str, kept: list[str]) -> None:
    _probe(tmp_path, [3.0, 1.0, 2.0, 4.0, 5.0], keep=2, best_metric="train_value", best_mode=mode)
    assert _folders(tmp_path) == kept
    best = checkpoint_info(tmp_path / "checkpoint_5").best
    assert best is not None and best["value"] == (1.0 if mode == "min" else 5.0)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_on_a_tie_the_best_is_the_first_and_that_checkpoint_is_kept(
    tmp_path: Path, mode: str
) -> None:
    _probe(tmp_path, [1.0, 1.0, 1.0, 1.0], keep=1, best_metric="train_value", best_mode=mode)
    assert _folders(tmp_path) == ["checkpoint_1", "checkpoint_4"]
    best = checkpoint_info(tmp_path / "checkpoint_4").best
    assert best is not None and (best["step"], best["value"]) == (1, 1.0)


def test_the_best_is_always_a_checkpoint_that_was_saved_and_kept(tmp_path: Path) -> None:
    # Epoch 3 has the lowest value but is not saved (checkpoint_every=2): epoch 2 is best.
    _probe(
        tmp_path,
        [3.0, 2.0, 1.0, 4.0, 5.0, 6.0],
        keep=1,
        best_metric="train_value",
        checkpoint_every=2,
    )
    best = checkpoint_info(tmp_path / "checkpoint_6").best
    assert best is not None and (best["step"], best["value"]) == (2, 2.0)
    assert _folders(tmp_path) == ["checkpoint_2", "checkpoint_6"]


def test_record_holds_what_a_resume_needs(tmp_path: Path) -> None:
    state, history = _train(tmp_path, 2, metadata={"spec_hash": "abc", "beagle": "0.1.0"})
    info = checkpoint_info(latest_checkpoint(tmp_path))  # type: ignore[arg-type]
    assert (info.step, info.epoch, info.position, info.finished) == (20, 2, 0, True)
    assert info.metadata == {"spec_hash": "abc", "beagle": "0.1.0"}
    assert info.history == history
    assert sorted(history) == ["train_loss", "val_loss"]
    restored = load_checkpoint(info.path, make_state(seed=3))
    assert leaves_equal(restored.params, state.params)
    assert leaves_equal(restored.opt_state, state.opt_state)
    assert int(restored.step) == 20


def test_refuses_to_mix_runs_without_resume(tmp_path: Path) -> None:
    _probe(tmp_path, [1.0])
    with pytest.raises(FileExistsError, match="resume=True"):
        _probe(tmp_path, [1.0])


def test_resuming_a_finished_run_trains_nothing_and_more_epochs_extend_it(
    tmp_path: Path, reference: tuple[TrainState, dict]
) -> None:
    _train(tmp_path, 2)
    calls: list[int] = []

    def counting_data(epoch: int) -> Any:
        calls.append(epoch)
        return data_fn(epoch)

    state, history = _train(tmp_path, 2, data=counting_data, resume=True)
    assert calls == [] and len(history["train_loss"]) == 2
    state, history = _train(tmp_path, 3, data=counting_data, resume=True)
    assert calls == [2]
    assert leaves_equal(state.params, reference[0].params)
    assert history == reference[1]
    assert checkpoint_info(latest_checkpoint(tmp_path)).finished  # type: ignore[arg-type]


KILLED_SAVE = """
import os, signal, sys
sys.path[:0] = [{repo!r}, {tests!r}]
import jax
from orbax.checkpoint._src.path import atomicity
from test_training_helpers import data_fn, make_state, train_step, val_step
from beagle.training import train_loop

original = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize_then_die(self):
    if self._final_path.name == "checkpoint_20":
        # The save of epoch 2: all its items are written, the folder is not yet renamed.
        os.kill(os.getpid(), signal.SIGKILL)
    await original(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize_then_die
train_loop(make_state(), train_step, data_fn, 3, 10, jax.random.PRNGKey(0),
           checkpoint_dir=sys.argv[1], val_step_fn=val_step,
           val_data_iterator=lambda: data_fn(0), val_num_batches=3, show_progress=False)
"""


def test_a_save_killed_before_it_completes_leaves_the_previous_checkpoint_usable(
    tmp_path: Path, reference: tuple[TrainState, dict]
) -> None:
    script = tmp_path / "killed_save.py"
    script.write_text(textwrap.dedent(KILLED_SAVE.format(repo=str(REPO), tests=str(TESTS))))
    directory = tmp_path / "checkpoints"
    run = subprocess.run(
        [sys.executable, str(script), str(directory)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == -9, run.stderr
    leftovers = [name for name in _folders(directory) if name != "checkpoint_10"]
    assert leftovers and all("tmp" in name for name in leftovers)  # the half-finished save
    latest = latest_checkpoint(directory)
    assert latest is not None and latest.name == "checkpoint_10"
    assert checkpoint_info(latest).epoch == 1
    load_checkpoint(latest, make_state())

    state, history = _train(directory, resume=True)
    assert leaves_equal(state.params, reference[0].params)
    assert history == reference[1]
    assert "checkpoint_30" in _folders(directory)
    assert not any("tmp" in name for name in _folders(directory))


def test_asynchronous_saves_are_complete_when_the_loop_returns(tmp_path: Path) -> None:
    _train(tmp_path, 3, keep=5)
    assert _folders(tmp_path) == ["checkpoint_10", "checkpoint_20", "checkpoint_30"]
    for name in _folders(tmp_path):
        assert checkpoint_info(tmp_path / name).step == int(name.split("_")[1])
    assert os.listdir(tmp_path / "checkpoint_30")


def test_resume_from_a_save_checkpoint_folder_says_to_load_it_instead(tmp_path: Path) -> None:
    save_checkpoint(make_state(), tmp_path, 100)
    with pytest.raises(ValueError, match="saved by save_checkpoint") as raised:
        _train(tmp_path, 1, resume=True)
    message = str(raised.value)
    assert "checkpoint_100" in message and "load_checkpoint(" in message
    assert "new, empty checkpoint_dir" in message
    with pytest.raises(FileExistsError, match="pass resume=True") as refused:
        _train(tmp_path, 1)
    assert "another checkpoint_dir" in str(refused.value)


def _raw_record(path: Path) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    restored = checkpointer.restore(
        path.absolute(), args=ocp.args.Composite(record=ocp.args.JsonRestore())
    )
    return dict(restored["record"])


def test_the_loop_and_save_checkpoint_write_the_same_record_fields(tmp_path: Path) -> None:
    from beagle.training.checkpoint import read_record
    from beagle.training.resume import ResumeRecord

    early = EarlyStopping("val_loss", "min", patience=3)
    _train(tmp_path / "loop", 2, early_stopping=early, metadata={"spec_hash": "abc"})
    saved = save_checkpoint(make_state(), tmp_path / "saved", 7, metadata={"spec_hash": "abc"})
    from_loop = _raw_record(tmp_path / "loop" / "checkpoint_20")
    from_save = _raw_record(saved)
    assert set(from_loop) == set(from_save) == {f.name for f in fields(ResumeRecord)}
    assert {k for k, v in from_save.items() if v is None} == {
        "num_batches",
        "steps_per_call",
        "rng_key",
        "partial",
        "early_stopping",
        "best",
        "auto_choice",
    }
    # Every field survives the round trip through JSON, the loop's own ones included.
    record = read_record(tmp_path / "loop" / "checkpoint_20")
    assert ResumeRecord.from_json(record.to_json()) == record
    assert record.to_json() == from_loop
    assert record.from_loop and record.validations == 2 and record.num_batches == 10
    assert record.early_stopping is not None and record.rng_key is not None
    assert not read_record(saved).from_loop and read_record(saved).step == 7
