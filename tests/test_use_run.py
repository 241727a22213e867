"""Using what was trained (SPEC-2 section 4): `beagle eval`, `predict`, `export`,
`beagle.load_run` and the checkpoint API, on a real digits CNN (BatchNorm + dropout)
trained once by `beagle run` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import beagle
from beagle.data import digits
from beagle.training import checkpoint_info, checkpoints

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
version: 1
name: use_cnn
seed: 5
model:
  class: beagle.models:CNN
  args: {features: [8], num_classes: 10, dropout_rate: 0.2}
  input: batch.image
  batch_norm: true
  train_flag: train
  rngs: [dropout]
  outputs: logits
data: {source: digits, batch_size: 64, val_fraction: 0.2, test_fraction: 0.1}
optimizer: {name: adam, learning_rate: 0.01}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.logits, labels: batch.label}}
metrics:
  accuracy: {fn: accuracy, args: {logits: outputs.logits, labels: batch.label}}
train: {epochs: 3}
validation: {every: 1}
checkpoint: {every: 1, keep: 1, best: {metric: val_loss, mode: min}}
log: {dir: runs/use, plot: false}
"""


def beagle_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "beagle", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("use")
    (folder / "spec.yaml").write_text(SPEC)
    done = beagle_cli(folder, "run", "spec.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def val_arrays() -> dict[str, np.ndarray]:
    source = digits(64, val_fraction=0.2, test_fraction=0.1, seed=5)
    assert source.val is not None
    return source.val


def held_out_test_arrays() -> dict[str, np.ndarray]:
    source = digits(64, val_fraction=0.2, test_fraction=0.1, seed=5)
    assert source.test is not None
    return source.test


def test_checkpoints_names_the_latest_and_the_best(trained: Path) -> None:
    found = checkpoints(trained / "runs/use/checkpoints")
    assert found.latest is not None and found.latest.name == f"checkpoint_{found.steps[-1]}"
    history = json.loads((trained / "runs/use/history.json").read_text())
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    assert found.best is not None and checkpoint_info(found.best).epoch == best_epoch


def test_eval_of_the_best_checkpoint_equals_the_history_at_its_epoch(trained: Path) -> None:
    done = beagle_cli(trained, "eval", "spec.yaml", "--checkpoint", "best")
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((trained / "runs/use/history.json").read_text())
    best = checkpoints(trained / "runs/use/checkpoints").best
    assert best is not None
    info = checkpoint_info(best)
    written = trained / f"runs/use/eval/checkpoint_{info.step}-val.json"
    record = json.loads(written.read_text())
    assert record["step"] == info.step and record["epoch"] == info.epoch
    assert record["split"] == "val" and record["checkpoint"] == str(best)
    for name in ("val_loss", "val_accuracy"):
        assert record["metrics"][name] == pytest.approx(history[name][info.epoch - 1], rel=1e-6)


def test_predict_gives_the_accuracy_eval_measures_and_load_run_the_same_logits(
    trained: Path,
) -> None:
    """On the whole test split: `eval --split test`'s accuracy is predict's argmax accuracy."""
    done = beagle_cli(trained, "eval", "spec.yaml", "--checkpoint", "latest", "--split", "test")
    assert done.returncode == 0, done.stderr[-3000:]
    latest = checkpoints(trained / "runs/use/checkpoints").latest
    assert latest is not None
    step = checkpoint_info(latest).step
    record = json.loads((trained / f"runs/use/eval/checkpoint_{step}-test.json").read_text())
    test = held_out_test_arrays()
    rows = len(test["label"])
    assert record["examples"] == rows  # every example, the last partial batch included
    np.savez(trained / "test.npz", image=test["image"].astype(np.float64))
    done = beagle_cli(
        trained, "predict", "spec.yaml", "--input", "test.npz", "--output", "pred.npz",
        "--checkpoint", "latest", "--batch-size", "50",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    logits = np.load(trained / "pred.npz")["logits"]
    assert logits.shape == (rows, 10)
    accuracy = float(np.mean(logits.argmax(-1) == test["label"]))
    assert accuracy == pytest.approx(record["metrics"]["test_accuracy"], abs=1e-6)

    run = beagle.load_run(trained / "runs/use", checkpoint="latest")
    assert run.checkpoint == latest and set(run.variables) == {"params", "batch_stats"}
    again = run.predict({"image": test["image"]})
    np.testing.assert_allclose(again["logits"], logits, rtol=1e-5, atol=1e-6)
    assert callable(run.module.val_step) and run.spec.spec.name == "use_cnn"


def test_export_runs_in_a_process_without_beagle_or_the_model(trained: Path) -> None:
    done = beagle_cli(trained, "export", "spec.yaml", "--out", "exported")
    assert done.returncode == 0, done.stderr[-3000:]
    out = trained / "exported"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["platforms"] == ["cpu", "cuda", "tpu"]
    assert manifest["inputs"] == [{"key": "image", "shape": ["batch", 8, 8, 1], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == ["batch", 10]
    assert (out / "params").is_dir()
    images = val_arrays()["image"][:7]
    np.save(trained / "images.npy", images)
    code = (
        "import sys, jax, numpy as np\n"
        "from pathlib import Path\n"
        "exported = jax.export.deserialize(Path('exported/model.jax').read_bytes())\n"
        "x = np.load('images.npy')\n"
        "np.save('one.npy', exported.call(x[:1]))\n"
        "np.save('seven.npy', exported.call(x))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('beagle', 'flax')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fresh = subprocess.run(
        [sys.executable, "-c", code], cwd=trained, env=env, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.strip() == "[]"  # neither beagle nor flax (the model's code) loaded
    run = beagle.load_run(trained / "runs/use")
    want = np.asarray(run.forward(jax.numpy.asarray(images)))
    np.testing.assert_allclose(np.load(trained / "seven.npy"), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(trained / "one.npy"), want[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["eval", "spec.yaml", "--checkpoint", "7"], "no checkpoint of step 7"),
        (["eval", "spec.yaml", "--split", "holdout"], "no split 'holdout'"),
        (
            ["predict", "spec.yaml", "--input", "bad_key.npz", "--output", "o.npz"],
            "the input has no array 'image'",
        ),
        (
            ["predict", "spec.yaml", "--input", "bad_shape.npz", "--output", "o.npz"],
            "has shape (4, 8, 8); the model takes (N, 8, 8, 1)",
        ),
        (
            ["predict", "spec.yaml", "--input", "bad_dtype.npz", "--output", "o.npz"],
            "is int32; the model was trained on float32",
        ),
    ],
)
def test_bad_requests_exit_2_and_write_nothing(trained: Path, args: list[str], words: str) -> None:
    np.savez(trained / "bad_key.npz", img=np.zeros((4, 8, 8, 1), np.float32))
    np.savez(trained / "bad_shape.npz", image=np.zeros((4, 8, 8), np.float32))
    np.savez(trained / "bad_dtype.npz", image=np.zeros((4, 8, 8, 1), np.int32))
    before = sorted(p.name for p in (trained / "runs/use/eval").glob("*"))
    done = beagle_cli(trained, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert words in done.stderr, done.stderr
    assert not (trained / "o.npz").exists()
    assert sorted(p.name for p in (trained / "runs/use/eval").glob("*")) == before


def test_a_split_the_data_has_not_is_exit_2(trained: Path, tmp_path: Path) -> None:
    """A run folder whose spec holds no test data: `--split test` names what is missing."""
    import shutil

    folder = tmp_path / "use"
    shutil.copytree(trained / "runs/use", folder, ignore=shutil.ignore_patterns("eval"))
    spec = folder / "spec.yaml"
    spec.write_text(spec.read_text().replace(", test_fraction: 0.1", ""))
    done = beagle_cli(tmp_path, "eval", str(folder), "--split", "test")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "the data has no test split (data.test or test_fraction)" in done.stderr
    assert not (folder / "eval").exists()


def test_a_spec_never_run_has_nothing_to_use(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    done = beagle_cli(tmp_path, "eval", "spec.yaml")
    assert done.returncode == 2
    assert "train it first with `beagle run SPEC`" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_import_beagle_stays_free_of_jax_and_load_run_is_lazy() -> None:
    code = (
        "import sys, beagle; before = 'jax' in sys.modules; "
        "from beagle import load_run; print(before, load_run.__module__, load_run.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "beagle.runner.inference", "load_run"]


def fine_tune_spec(folder: Path, source: Path, extra: str = "", args: str = "") -> Path:
    text = SPEC.replace("log: {dir: runs/use, plot: false}", "log: {dir: runs/tuned, plot: false}")
    text = text.replace("learning_rate: 0.01", "learning_rate: 0.001")
    if args:
        text = text.replace("num_classes: 10,", args)
    spec = folder / "tuned.yaml"
    spec.write_text(text + f"init: {{from: {source}, checkpoint: latest{extra}}}\n")
    return spec


def wired_state(spec: Path) -> tuple[object, object]:
    """The fresh state `beagle run` would build for `spec`, and the one `init` makes of it."""
    from beagle.compiler import compile_spec
    from beagle.runner import trace, wiring
    from beagle.runner.warm_start import warm_start
    from beagle.spec import load_spec

    loaded = load_spec(spec, imports="import")
    module = wiring.import_module_from_text(
        compile_spec(loaded.spec, loaded.source_name), "_tuned", str(spec)
    )
    fresh = trace.wire(loaded, module).state
    return fresh, warm_start(loaded, fresh)[0]


def test_init_takes_the_variables_and_starts_the_optimizer_fresh(
    trained: Path, tmp_path: Path
) -> None:
    from beagle.training import load_variables

    source = checkpoints(trained / "runs/use/checkpoints").latest
    assert source is not None
    _, state = wired_state(fine_tune_spec(tmp_path, trained / "runs/use"))
    saved = load_variables(source, {"params": state.params, "batch_stats": state.batch_stats})
    for key in ("params", "batch_stats"):
        same = jax.tree.map(np.array_equal, getattr(state, key), saved[key])
        assert all(jax.tree.leaves(same)), key
    assert int(state.step) == 0
    assert all(not np.any(leaf) for leaf in jax.tree.leaves(state.opt_state))

    done = beagle_cli(tmp_path, "run", "tuned.yaml", "--no-progress", "--set", "train.epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"starts from the params and BatchNorm statistics of {source}" in done.stderr


def test_init_with_a_new_head_keeps_the_head_s_own_initialisation(
    trained: Path, tmp_path: Path
) -> None:
    args = "num_classes: 5,"
    refused = fine_tune_spec(tmp_path, trained / "runs/use", args=args)
    done = beagle_cli(tmp_path, "run", str(refused), "--no-progress")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "tuned.yaml:" in done.stderr and "init.from" in done.stderr
    assert "params/head/kernel: shape (128, 10) in the checkpoint, (128, 5) here" in done.stderr
    assert not (tmp_path / "runs").exists()

    spec = fine_tune_spec(tmp_path, trained / "runs/use", ", exclude: [params/head]", args)
    fresh, state = wired_state(spec)
    assert all(
        jax.tree.leaves(jax.tree.map(np.array_equal, state.params["head"], fresh.params["head"]))
    )
    source = checkpoints(trained / "runs/use/checkpoints").latest
    assert source is not None
    from beagle.training import load_variables

    saved = load_variables(source, {"params": {"conv_0": state.params["conv_0"]}})
    same = jax.tree.map(np.array_equal, state.params["conv_0"], saved["params"]["conv_0"])
    assert all(jax.tree.leaves(same))


def test_init_from_a_folder_without_checkpoints_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    spec = fine_tune_spec(tmp_path, tmp_path / "empty")
    done = beagle_cli(tmp_path, "run", str(spec), "--no-progress")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "init.from" in done.stderr and "holds no checkpoint" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "tuned.yaml"]
