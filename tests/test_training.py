"""The seed's contract for `beagle.training`: its Quick Start, API reference and patterns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.random as random
import numpy as np
import optax
import pytest
from test_training_helpers import leaves_equal, make_state

import beagle
import beagle.training as training
from beagle.training import (
    Metrics,
    TrainState,
    average_metrics,
    format_metrics,
    load_checkpoint,
    save_checkpoint,
    train_loop,
)

REPO = Path(__file__).resolve().parents[1]


class Regressor(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))


class BNClassifier(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Dense(16)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(3)(nn.relu(x))


def test_public_api_is_exported() -> None:
    assert set(training.__all__) == {
        "train_loop",
        "TrainState",
        "save_checkpoint",
        "load_checkpoint",
        "Metrics",
        "average_metrics",
        "format_metrics",
        "EarlyStopping",
        "TrainingInterrupted",
        "NonFiniteLossError",
        "DataExhaustedError",
        "latest_checkpoint",
        "checkpoint_info",
        "CheckpointInfo",
        "make_placement",
        "BatchShare",
        "checkpoints",
        "Checkpoints",
        "load_variables",
        "Placement",
        "shard",
        "initial_dynamic_scale",
        "AutoChoice",
    }
    assert all(hasattr(training, name) for name in training.__all__)


def test_import_beagle_does_not_import_the_runtime() -> None:
    code = "import sys, beagle; print('beagle.training' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]
    assert beagle.__version__


def test_quick_start_runs_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = Regressor()
    rs = np.random.RandomState(0)
    xs = rs.randn(50 * 16, 4).astype(np.float32)
    ys = xs.sum(axis=1, keepdims=True)
    my_dataloader = [{"x": xs[i : i + 16], "y": ys[i : i + 16]} for i in range(0, len(xs), 16)]
    params = model.init(random.PRNGKey(1), xs[:1])["params"]
    initial_state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(0.001))

    # --- the seed's Quick Start, verbatim but for the checkpoint folder ---
    @jax.jit
    def train_step(state, batch, rng_key):  # type: ignore[no-untyped-def]
        def loss_fn(params):  # type: ignore[no-untyped-def]
            preds = state.apply_fn({"params": params}, batch["x"])
            return jnp.mean((preds - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        new_state = state.apply_gradients(grads=grads)
        return new_state, {"loss": loss}

    def data_iterator_fn():  # type: ignore[no-untyped-def]
        for batch in my_dataloader:  # noqa: UP028 (the seed's code, verbatim)
            yield batch

    final_state, history = train_loop(
        state=initial_state,
        train_step_fn=train_step,
        data_iterator_fn=data_iterator_fn,
        num_epochs=100,
        num_batches=50,
        rng_key=random.PRNGKey(0),
        checkpoint_dir=str(tmp_path / "checkpoints" / "my_model"),
        checkpoint_every=10,
    )

    print(f"Final loss: {history['train_loss'][-1]}")
    # ---
    out = capsys.readouterr().out
    assert "Final loss:" in out and "epoch 100/100" in out
    assert list(history) == ["train_loss"] and len(history["train_loss"]) == 100
    assert history["train_loss"][-1] < 0.1 * history["train_loss"][0]
    assert int(final_state.step) == 100 * 50
    folders = sorted(p.name for p in (tmp_path / "checkpoints" / "my_model").iterdir())
    assert folders == ["checkpoint_4000", "checkpoint_4500", "checkpoint_5000"]


def test_train_state_create_takes_batch_stats() -> None:
    model = BNClassifier()
    variables = model.init(random.PRNGKey(0), jnp.zeros((2, 5)), train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(0.001),
        batch_stats=variables["batch_stats"],
    )
    assert leaves_equal(state.batch_stats, variables["batch_stats"])
    assert TrainState.create(apply_fn=model.apply, params={}, tx=optax.sgd(0.1)).batch_stats is None


def test_save_and_load_checkpoint_as_documented(tmp_path: Path) -> None:
    state = make_state()
    state = state.apply_gradients(grads=jax.tree.map(jnp.ones_like, state.params))
    path = save_checkpoint(state, str(tmp_path / "model"), step=100)
    assert path == (tmp_path / "model" / "checkpoint_100").absolute()
    assert (tmp_path / "model" / "checkpoint_100").is_dir()

    restored_state = load_checkpoint(str(tmp_path / "model" / "checkpoint_100"), make_state(seed=7))
    assert type(restored_state) is TrainState
    assert leaves_equal(restored_state.params, state.params)
    assert leaves_equal(restored_state.opt_state, state.opt_state)
    assert int(restored_state.step) == 1
    # A checkpoint directory loads its latest checkpoint; saving a step again replaces it.
    save_checkpoint(restored_state, tmp_path / "model", step=100)
    assert leaves_equal(load_checkpoint(tmp_path / "model", state).params, state.params)


def test_metrics_helpers_as_documented() -> None:
    batch_metrics = [Metrics(values={"loss": 1.0}), Metrics(values={"loss": 2.0})]
    avg = average_metrics(batch_metrics)
    assert avg.values == {"loss": 1.5}
    assert format_metrics(avg) == "loss: 1.5000"
    weighted = average_metrics([Metrics({"loss": 1.0}, weight=3), Metrics({"loss": 5.0}, weight=1)])
    assert weighted.values == {"loss": 2.0} and weighted.weight == 4
    assert format_metrics({"loss": 0.25, "accuracy": 0.5}) == "loss: 0.2500, accuracy: 0.5000"
    with pytest.raises(ValueError):
        average_metrics([])


def test_batch_norm_and_validation_patterns(tmp_path: Path) -> None:
    model = BNClassifier()
    rs = np.random.RandomState(0)
    xs = rs.randn(96, 5).astype(np.float32)
    labels = (xs[:, 0] > 0).astype(np.int32) + (xs[:, 1] > 0).astype(np.int32)
    train_batches = [{"x": xs[i : i + 16], "y": labels[i : i + 16]} for i in range(0, 64, 16)]
    val_batches = [{"x": xs[i : i + 16], "y": labels[i : i + 16]} for i in range(64, 96, 16)]
    variables = model.init(random.PRNGKey(0), xs[:2], train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(0.01),
        batch_stats=variables["batch_stats"],
    )

    @jax.jit
    def train_step(state, batch, rng_key):  # type: ignore[no-untyped-def]
        def loss_fn(params):  # type: ignore[no-untyped-def]
            outputs, updates = state.apply_fn(
                {"params": params, "batch_stats": state.batch_stats},
                batch["x"],
                mutable=["batch_stats"],
                train=True,
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["y"]).mean()
            return loss, updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads)
        new_state = new_state.replace(batch_stats=updates["batch_stats"])
        return new_state, {"loss": loss}

    @jax.jit
    def val_step(state, batch, rng_key):  # type: ignore[no-untyped-def]
        preds = state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats}, batch["x"], train=False
        )
        accuracy = jnp.mean(preds.argmax(-1) == batch["y"])
        return state, {"accuracy": accuracy}

    def val_data_iterator():  # type: ignore[no-untyped-def]
        while True:
            yield from val_batches

    final_state, history = train_loop(
        state,
        train_step,
        lambda: iter(train_batches),
        num_epochs=5,
        num_batches=4,
        rng_key=random.PRNGKey(0),
        checkpoint_dir=str(tmp_path / "bn"),
        val_step_fn=val_step,
        val_data_iterator=val_data_iterator(),
        val_num_batches=2,
        show_progress=False,
    )
    assert sorted(history) == ["train_loss", "val_accuracy"]
    assert len(history["train_loss"]) == len(history["val_accuracy"]) == 5
    assert all(0.0 <= a <= 1.0 for a in history["val_accuracy"])
    assert not leaves_equal(final_state.batch_stats, state.batch_stats)
    restored = load_checkpoint(tmp_path / "bn" / "checkpoint_20", state)
    assert leaves_equal(restored.batch_stats, final_state.batch_stats)
    assert leaves_equal(restored.params, final_state.params)


def test_callers_state_survives_a_donating_step() -> None:
    from test_training_helpers import data_fn, train_step

    state = make_state()
    before = jax.tree.map(np.asarray, state.params)
    final_state, _ = train_loop(
        state, train_step, data_fn, 1, 10, random.PRNGKey(0), show_progress=False
    )
    assert leaves_equal(state.params, before)  # still readable, unchanged
    assert not leaves_equal(final_state.params, before)


def test_example_script_trains_something_real() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "examples/training_example.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "validation accuracy" in out.stdout
    accuracy = float(out.stdout.rsplit("validation accuracy:", 1)[1].split()[0])
    assert accuracy > 0.85
