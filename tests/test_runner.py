"""`beagle.runner.run_spec` in-process: real short training runs and their run folders."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from beagle.runner import RunRefused, run_spec, trace_spec
from beagle.spec import LoadedSpec, SpecError, load_spec
from beagle.training import NonFiniteLossError, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
version: 1
name: tiny
seed: 3
model:
  class: beagle.models:MLP
  args: {{features: [16, 1]}}
data:
  source: synthetic
  task: regression
  examples: 320
  features: 4
  batch_size: 32
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
metrics:
  mae: {{fn: mae, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: {epochs}, batches_per_epoch: 8}}
validation: {{every: 1}}
checkpoint: {{every: 1, keep: 2}}
log: {{dir: {log_dir}, tensorboard: true}}
"""


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path, *overrides: str) -> LoadedSpec:
    loaded = load_spec(path, overrides, imports="import")
    assert isinstance(loaded, LoadedSpec), loaded
    return loaded


def leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_synthetic_run_writes_the_run_folder(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, TINY.format(epochs=3, log_dir="runs/tiny"))
    result = run_spec(load(spec), restart=False, progress=False)
    run = in_tmp / "runs" / "tiny"
    assert result.status == "done" and result.run_dir == Path("runs/tiny")
    assert set(result.history) == {"train_loss", "train_mae", "val_loss", "val_mae"}
    assert all(len(v) == 3 for v in result.history.values())
    assert result.history["train_loss"][-1] < result.history["train_loss"][0]
    assert json.loads((run / "history.json").read_text()) == result.history
    assert (run / "spec.yaml").read_text() == spec.read_text()
    assert (run / "tiny.py").read_text().startswith("#")
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "epoch,train_loss,train_mae,val_loss,val_mae" and len(rows) == 4
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "checkpoint_16",
        "checkpoint_24",
    ]
    assert not (in_tmp / "generated").exists()  # `run` never writes generated/
    assert result.steps == 24 and result.steps_per_s > 0 and result.epochs == 3
    assert result.final["val_loss"] == result.history["val_loss"][-1]
    assert result.best["val_loss"].value == min(result.history["val_loss"])
    best = result.best_checkpoint
    assert best is not None and best.metric == "val_loss" and best.unsaved is None
    assert best.path == Path("runs/tiny/checkpoints/checkpoint_24") and best.epoch == 3
    assert best.epoch == result.best["val_loss"].epoch and best.value == best.best_value
    assert f"best checkpoint  {best.path} (epoch 3, val_loss " in render(result)


def test_finished_run_rerun_is_already_complete_and_more_epochs_extend_it(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, TINY.format(epochs=2, log_dir="runs/tiny"))
    notes: list[str] = []
    first = run_spec(load(spec), restart=False, progress=False, notify=notes.append)
    assert notes == []
    again = run_spec(load(spec), restart=False, progress=False, notify=notes.append)
    assert again.status == "already_complete" and again.steps == 0
    assert again.history == first.history
    assert len(notes) == 1 and "already complete" in notes[0]
    longer = run_spec(
        load(spec, "train.epochs=3"), restart=False, progress=False, notify=notes.append
    )
    assert len(notes) == 2 and "resuming" in notes[1]
    assert longer.status == "done" and longer.steps == 8
    assert longer.resumed_from is not None
    assert longer.history["train_loss"][:2] == first.history["train_loss"]
    assert len(longer.history["train_loss"]) == 3


def test_changed_module_refuses_resume_naming_the_change(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, TINY.format(epochs=2, log_dir="runs/tiny"))
    run_spec(load(spec, "train.epochs=1"), restart=False, progress=False)
    with pytest.raises(RunRefused) as refused:
        run_spec(load(spec, "optimizer.learning_rate=0.5"), restart=False, progress=False)
    message = str(refused.value)
    assert "optimizer.learning_rate: 0.01 -> 0.5" in message
    assert "--restart" in message and "checkpoint_8" in message
    restarted = run_spec(load(spec, "optimizer.learning_rate=0.5"), restart=True, progress=False)
    assert restarted.status == "done" and restarted.resumed_from is None
    assert len(restarted.history["train_loss"]) == 2


def test_steps_per_call_four_matches_one(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, TINY.format(epochs=2, log_dir="runs/k1"))
    one = run_spec(load(spec), restart=False, progress=False)
    four = run_spec(
        load(spec, "train.steps_per_call=4", "log.dir=runs/k4"), restart=False, progress=False
    )
    assert set(one.history) == set(four.history)
    for key, values in one.history.items():
        np.testing.assert_allclose(four.history[key], values, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves(one.state.params), leaves(four.state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


INTERRUPTING_DATA = """\
import os
import signal
from pathlib import Path

import numpy as np

_calls = {"train": 0}
FLAG = Path(__file__).with_name("interrupted.flag")


def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4), dtype=np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], np.float32)).astype(np.float32)
    return x, y


def _batch(x, y, i, size):
    return {"x": x[i * size:(i + 1) * size], "y": y[i * size:(i + 1) * size]}


def train(batch_size):
    _calls["train"] += 1
    call = _calls["train"]
    x, y = _arrays(batch_size * 8, 0)
    for i in range(8):
        if call == 3 and i == 5 and not FLAG.exists():  # call 1 gives the init batch
            FLAG.write_text("once")
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, in the middle of epoch 2
        yield _batch(x, y, i, batch_size)


def val(batch_size):
    x, y = _arrays(batch_size * 2, 1)
    for i in range(2):
        yield _batch(x, y, i, batch_size)
"""

PYTHON_SPEC = """\
version: 1
name: pyfeed
seed: 1
model:
  class: beagle.models:MLP
  args: {{features: [8, 1]}}
data: {{source: python, train: "feed_{tag}:train", val: "feed_{tag}:val", batch_size: 16}}
optimizer: {{name: sgd, learning_rate: 0.05, args: {{momentum: 0.9}}}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: 4, batches_per_epoch: 8}}
validation: {{batches: 2}}
checkpoint: {{every: 2, keep: 2}}
log: {{dir: runs/{tag}}}
"""


def test_resume_after_interruption_matches_uninterrupted(in_tmp: Path) -> None:
    for tag in ("straight", "broken"):
        (in_tmp / f"feed_{tag}.py").write_text(INTERRUPTING_DATA)
        write_spec(in_tmp, PYTHON_SPEC.format(tag=tag), f"{tag}.yaml")
    (in_tmp / "interrupted.flag").write_text("the straight run is never interrupted")
    straight = run_spec(load(in_tmp / "straight.yaml"), restart=False, progress=False)
    (in_tmp / "interrupted.flag").unlink()

    with pytest.raises(TrainingInterrupted) as interrupted:
        run_spec(load(in_tmp / "broken.yaml"), restart=False, progress=False)
    assert 8 < interrupted.value.step < 16  # in the middle of epoch 2
    partial = json.loads((in_tmp / "runs/broken/history.json").read_text())
    assert len(partial["train_loss"]) == 1  # the epoch before the interruption was kept
    resumed = run_spec(load(in_tmp / "broken.yaml"), restart=False, progress=False)
    assert resumed.resumed_from is not None
    assert (in_tmp / "runs/broken/history.json").read_text() == (
        in_tmp / "runs/straight/history.json"
    ).read_text()
    assert resumed.history == straight.history
    for a, b in zip(leaves(straight.state), leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    sys.modules.pop("feed_straight", None)
    sys.modules.pop("feed_broken", None)


def test_non_finite_loss_stops_with_epoch_step_and_terms(in_tmp: Path) -> None:
    x = np.ones((64, 4), np.float32)
    x[40] = np.nan
    np.savez(in_tmp / "train.npz", x=x, y=np.ones((64, 1), np.float32))
    spec = write_spec(
        in_tmp,
        """\
        version: 1
        name: nan_run
        model: {class: "beagle.models:MLP", args: {features: [1]}}
        data: {source: npz, train: train.npz, batch_size: 8, shuffle: false}
        optimizer: {name: sgd, learning_rate: 0.1}
        losses:
          mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
          mae: {fn: mae, args: {predictions: outputs.outputs, targets: batch.y}}
        train: {epochs: 2}
        checkpoint: {every: 1}
        """,
    )
    with pytest.raises(NonFiniteLossError) as error:
        run_spec(load(spec), restart=False, progress=False)
    assert error.value.epoch == 1 and error.value.step == 5
    assert "loss" in error.value.names
    assert not list((in_tmp / "runs/nan_run/checkpoints").glob("checkpoint_*"))


def test_parallel_on_one_device_trains_as_without_it(in_tmp: Path) -> None:
    """`parallel: {data: auto}` on this one-device process: a 1 x 1 mesh, the same run."""
    plain = write_spec(in_tmp, TINY.format(epochs=2, log_dir="runs/plain"), "plain.yaml")
    meshed = write_spec(
        in_tmp,
        TINY.format(epochs=2, log_dir="runs/meshed") + "parallel: {data: auto}\n",
        "meshed.yaml",
    )
    want = run_spec(load(plain), restart=False, progress=False)
    got = run_spec(load(meshed), restart=False, progress=False)
    assert got.history == want.history
    assert all(
        np.array_equal(a, b) for a, b in zip(leaves(got.state), leaves(want.state), strict=True)
    )


def test_data_that_does_not_fit_is_a_spec_problem(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, TINY.format(epochs=1, log_dir="runs/tiny"))
    with pytest.raises(SpecError) as error:
        run_spec(load(spec, "train.batches_per_epoch=50"), restart=False, progress=False)
    (problem,) = error.value.problems
    assert problem.path == "train.batches_per_epoch" and "8 batches" in problem.message
    assert problem.file == "--set train.batches_per_epoch=50"  # the override is what to change
    in_file = write_spec(
        in_tmp, spec.read_text().replace("batches_per_epoch: 8", "batches_per_epoch: 50")
    )
    with pytest.raises(SpecError) as error:
        run_spec(load(in_file), restart=False, progress=False)
    (problem,) = error.value.problems
    assert (problem.line, problem.column) == (18, 39)  # at the value to change


def test_trace_points_at_the_spec_entry_involved(in_tmp: Path) -> None:
    good = write_spec(in_tmp, TINY.format(epochs=1, log_dir="runs/tiny"))
    assert trace_spec(load(good)) == []
    np.savez(in_tmp / "d.npz", x=np.ones((256, 4), np.float32), y=np.ones((256, 1), np.float32))
    npz_text = TINY.format(epochs=1, log_dir="r").replace(
        "  source: synthetic\n  task: regression\n  examples: 320\n  features: 4\n",
        "  source: npz\n  train: d.npz\n  val: d.npz\n",
    )
    assert trace_spec(load(write_spec(in_tmp, npz_text, "npz.yaml"))) == []
    missing = write_spec(in_tmp, npz_text.replace("targets: batch.y", "targets: batch.z"), "m.yaml")
    problems = trace_spec(load(missing))  # the front end cannot know an npz file's keys
    assert [p.path for p in problems] == ["losses.mse.args.targets", "metrics.mae.args.targets"]
    assert "no key 'z'" in problems[0].message and problems[0].line == 14
    shapes = write_spec(
        in_tmp, TINY.format(epochs=1, log_dir="r").replace("[16, 1]", "[16, 3]"), "shapes.yaml"
    )
    (problem, *_) = trace_spec(load(shapes))
    assert problem.path == "losses.mse.args.targets" and "(32, 3)" in problem.message
    arity = write_spec(
        in_tmp,
        TINY.format(epochs=1, log_dir="r").replace(
            "  args: {features: [16, 1]}", "  args: {features: [16, 1]}\n  outputs: [a, b]"
        ),
        "arity.yaml",
    )
    try:
        loaded = load(arity)
    except SpecError:  # the front end already rejects `outputs.outputs` as undeclared
        return
    (problem, *_) = trace_spec(loaded)
    assert problem.path == "model.outputs" and "2 outputs" in problem.message


def test_digits_cnn_reaches_097_validation_accuracy(in_tmp: Path) -> None:
    spec_file = ROOT / "specs" / "digits_cnn.yaml"
    if not spec_file.exists():
        pytest.skip("specs/digits_cnn.yaml is not there yet")
    loaded = load(spec_file, "log.dir=runs/digits", "checkpoint.dir=runs/digits/checkpoints")
    started = time.perf_counter()
    result = run_spec(loaded, restart=False, progress=False)
    elapsed = time.perf_counter() - started
    assert result.history["val_accuracy"][-1] >= 0.97, result.history["val_accuracy"]
    assert elapsed < 60


def test_csv_and_curves_place_sparse_validations_at_their_epochs(tmp_path: Path) -> None:
    from beagle.runner.artifacts import RunFolder
    from beagle.runner.summary import summary_renderable

    history = {"train_loss": [3.0, 2.0, 1.0, 0.5], "val_loss": [2.5, 0.7]}
    folder = RunFolder(tmp_path, "sparse", val_every=2)
    folder.write_history(history)
    assert folder.metrics_file.read_text().splitlines() == [
        "epoch,train_loss,val_loss",
        "1,3.0,",
        "2,2.0,2.5",
        "3,1.0,",
        "4,0.5,0.7",
    ]
    assert json.loads(folder.history_file.read_text()) == history
    assert folder.write_curves(history, "sparse") == folder.curves_file
    assert folder.curves_file.stat().st_size > 10_000
    from rich.console import Console

    console = Console(record=True, width=100)
    from beagle.runner import Best, RunResult

    result = RunResult(
        status="done",
        name="sparse",
        run_dir=tmp_path,
        history=history,
        final={"train_loss": 0.5, "val_loss": 0.7},
        best={"val_loss": Best(0.7, 4)},
        wall_time_s=2.0,
        train_time_s=1.0,
        steps=40,
        epochs=4,
        files={"curves": folder.curves_file},
    )
    console.print(summary_renderable(result))
    text = console.export_text()
    assert "val_loss" in text and "40.0 steps/s" in text and "curves.png" in text


REG = """\
version: 1
name: reg
model: {class: beagle.models:MLP, args: {features: [8, 1]}, train_flag: null}
data: {source: synthetic, task: regression, examples: 128, batch_size: 32}
optimizer: {name: adam, learning_rate: 2e-3}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 2}
checkpoint: {every: 1}
log: {plot: false}
"""

CLS = """\
version: 1
name: cls
model: {class: beagle.models:MLP, args: {features: [8, 3]}, train_flag: null}
data: {source: synthetic, task: classification, classes: 3, examples: 128, batch_size: 32}
optimizer: {name: adam, learning_rate: 2e-3}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
metrics:
  top: {fn: top_k_accuracy, args: {logits: outputs.outputs, labels: batch.y, k: 5}}
train: {epochs: 1}
"""

USER_CODE = """\
import flax.linen as nn


def vector(predictions, targets):
    return (predictions - targets) ** 2


def boom(predictions, targets):
    raise RuntimeError("boom from a user loss")


class NoTrain(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)
"""


def _run_problems(loaded: LoadedSpec) -> list[Any]:
    with pytest.raises(SpecError) as error:
        run_spec(loaded, restart=False, progress=False)
    return error.value.problems


@pytest.mark.parametrize(
    ("overrides", "path", "words"),
    [
        (("losses.mse.fn=tracemod:vector",), "losses.mse.fn", "must return a scalar"),
        (("losses.mse.fn=tracemod:boom",), "losses.mse.fn", "boom from a user loss"),
        (
            ("model.class=tracemod:NoTrain", "model.args={}", "model.train_flag=train"),
            "model.train_flag",
            "train_flag: null",
        ),
        (
            (
                "metrics.top.fn=top_k_accuracy",
                "metrics.top.args.logits=outputs.outputs",
                "metrics.top.args.labels=batch.y",
                "metrics.top.args.k=1",
            ),
            "metrics.top.args.labels",
            "integer labels",
        ),
        (("losses.mse.args.targets=batch.x",), "losses.mse.args.targets", "same shape"),
    ],
    ids=["non-scalar-loss", "raising-loss", "train-flag", "top-k-on-regression", "shapes"],
)
def test_run_makes_checks_trace_and_writes_nothing_for_what_it_rejects(
    in_tmp: Path, overrides: tuple[str, ...], path: str, words: str
) -> None:
    (in_tmp / "tracemod.py").write_text(USER_CODE)
    loaded = load(write_spec(in_tmp, REG), *overrides)
    checked = trace_spec(loaded)
    problems = _run_problems(loaded)
    assert [p.path for p in problems] == [p.path for p in checked] == [path]
    assert words in str(problems[0])
    assert "losse " not in str(problems[0])
    assert not (in_tmp / "runs").exists()  # no run folder for a spec that cannot run


def test_a_failing_metric_points_at_the_metric(in_tmp: Path) -> None:
    (problem,) = trace_spec(load(write_spec(in_tmp, CLS)))
    assert problem.path == "metrics.top.args.k" and "3 classes" in problem.message
    assert (problem.line, problem.column) == (9, 81)
    (problem,) = _run_problems(load(write_spec(in_tmp, CLS)))
    assert problem.path == "metrics.top.args.k"


def test_invalid_data_writes_no_run_folder_and_restart_keeps_checkpoints(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, REG)
    run_spec(load(spec), restart=False, progress=False)
    checkpoints = sorted((in_tmp / "runs/reg/checkpoints").iterdir())
    # (A validation split smaller than one batch is no longer a problem: it is one short
    # batch. An epoch longer than the data is.)
    too_long = ("train.batches_per_epoch=100000", "log.dir=elsewhere")
    (problem,) = _run_problems(load(spec, *too_long))
    assert problem.path == "train.batches_per_epoch" and "more than" in problem.message
    assert not (in_tmp / "elsewhere").exists()
    with pytest.raises(SpecError):  # --restart clears checkpoints only for a usable spec
        run_spec(load(spec, "losses.mse.args.targets=batch.x"), restart=True, progress=False)
    assert sorted((in_tmp / "runs/reg/checkpoints").iterdir()) == checkpoints


@pytest.mark.parametrize("key", ["log.dir", "checkpoint.dir"])
def test_output_paths_that_are_files_are_spec_problems(in_tmp: Path, key: str) -> None:
    (in_tmp / "a_file").write_text("")
    spec = write_spec(in_tmp, REG)
    (problem,) = _run_problems(load(spec, f"{key}=a_file"))
    assert problem.path == key and "a_file is a file" in problem.message
    (problem,) = _run_problems(load(spec, f"{key}=a_file/below"))
    assert problem.path == key and "inside a_file" in problem.message
    in_file = write_spec(in_tmp, REG.replace("log: {plot: false}", "log: {dir: a_file}"), "f.yaml")
    (problem,) = _run_problems(load(in_file))
    assert problem.path == "log.dir" and (problem.line, problem.column) == (10, 12)


def test_rerun_messages_for_an_extended_and_an_early_stopped_run(
    in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = write_spec(in_tmp, REG)
    run_spec(load(spec, "train.epochs=3"), restart=False, progress=False)
    notes: list[str] = []
    result = run_spec(load(spec), restart=False, progress=False, notify=notes.append)
    assert result.status == "already_complete"
    assert "has 3 epochs, more than the spec's 2" in notes[0] and "of 2" not in notes[0]

    stopping = (
        REG.replace("examples: 128", "examples: 640")
        .replace(
            "train: {epochs: 2}",
            "train: {epochs: 20}\nvalidation: {every: 2}\n"
            "early_stopping: {metric: val_loss, mode: min, patience: 1, min_delta: 100.0}",
        )
        .replace(
            "checkpoint: {every: 1}", "checkpoint: {every: 1, best: {metric: val_loss, mode: min}}"
        )
    )
    es = write_spec(in_tmp, stopping.replace("name: reg", "name: es"), "es.yaml")
    with caplog.at_level("WARNING"):
        result = run_spec(load(es), restart=False, progress=False)
    assert not [r for r in caplog.records if "did not provide metrics" in r.getMessage()]
    status = "stopped early at epoch 4 (early_stopping on val_loss)"
    assert result.status == "done" and result.epochs == 4 and result.stop_reason == status
    assert status in render(result)
    notes.clear()
    result = run_spec(load(es), restart=False, progress=False, notify=notes.append)
    assert result.status == "already_complete" and status in notes[0]
    assert "train.epochs" not in notes[0] and status in render(result)


def render(result: Any) -> str:
    from rich.console import Console

    from beagle.runner import summary_renderable

    console = Console(width=200, record=True)
    console.print(summary_renderable(result))
    return console.export_text()


def test_refused_resume_shows_parsed_values(in_tmp: Path) -> None:
    spec = write_spec(in_tmp, REG)
    run_spec(load(spec, "train.epochs=1"), restart=False, progress=False)
    with pytest.raises(RunRefused) as refused:
        run_spec(load(spec, "optimizer.learning_rate=0.1"), restart=False, progress=False)
    assert "optimizer.learning_rate: 0.002 -> 0.1" in str(refused.value)


def test_summary_says_when_the_best_epoch_has_no_checkpoint(in_tmp: Path) -> None:
    # mode: max makes epoch 1 the best (the loss falls), so its checkpoint is the one missing.
    every_two = TINY.format(epochs=3, log_dir="runs/every").replace(
        "checkpoint: {every: 1, keep: 2}",
        "checkpoint: {every: 2, keep: 3, best: {metric: val_loss, mode: max}}",
    )
    result = run_spec(load(write_spec(in_tmp, every_two, "every.yaml")), progress=False)
    best = result.best_checkpoint
    assert best is not None and best.metric == "val_loss" and best.best_epoch == 1
    assert best.path == Path("runs/every/checkpoints/checkpoint_16") and best.epoch == 2
    assert best.value == result.history["val_loss"][1]
    assert best.best_value == result.history["val_loss"][0] > best.value
    assert best.unsaved == "not a saved epoch (checkpoint.every: 2)"
    # the loop's own record of its best checkpoint agrees
    from beagle.training import checkpoint_info, latest_checkpoint

    info = checkpoint_info(latest_checkpoint(in_tmp / "runs/every/checkpoints") or in_tmp)
    assert info.best is not None and info.best["epoch"] == 2 and info.best["step"] == 16
    text = render(result)
    assert f"best checkpoint  {best.path} (epoch 2, val_loss " in text
    assert "at epoch 1, has no checkpoint: not a saved epoch (checkpoint.every: 2)" in text

    keep_one = (
        TINY.format(epochs=3, log_dir="runs/keep")
        .replace("checkpoint: {every: 1, keep: 2}", "checkpoint: {every: 1, keep: 1}")
        .replace(
            "validation: {every: 1}",
            "validation: {every: 1}\nearly_stopping: {metric: val_loss, mode: max, patience: 5}",
        )
    )
    result = run_spec(load(write_spec(in_tmp, keep_one, "keep.yaml")), progress=False)
    best = result.best_checkpoint
    assert best is not None and best.best_epoch == 1 and best.epoch == 3
    assert best.path == Path("runs/keep/checkpoints/checkpoint_24")
    assert best.unsaved is not None and "removed (checkpoint.keep: 1" in best.unsaved
    assert "at epoch 1, has no checkpoint: its checkpoint was removed" in render(result)
