"""The golden modules run: one real jitted step each, and the behaviour each spec asks for.

Each module is imported the way a user would (`generated.<name>`), fed tiny arrays shaped
like its spec's data, and checked for what its code path promises: BatchNorm statistics,
dropout keys, the weighted sum of two losses, the `nan: skip` guard, `lax.scan` fusion.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from beagle.spec import load_spec
from beagle.training import initial_dynamic_scale

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
BATCH = 4


def module_of(name: str) -> ModuleType:
    return importlib.import_module(f"generated.{name}")


def tiny_batch(name: str, seed: int = 0) -> dict[str, jax.Array]:
    """A batch shaped like the spec's data source (digits or synthetic)."""
    data = load_spec(ROOT / "specs" / f"{name}.yaml").spec.data
    rng = np.random.default_rng(seed)
    if data.source == "digits":
        return {
            "image": jnp.asarray(rng.random((BATCH, 8, 8, 1)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32),
        }
    assert data.source == "synthetic"
    x = jnp.asarray(rng.normal(size=(BATCH, data.features)), jnp.float32)
    if data.task == "regression":
        return {"x": x, "y": jnp.asarray(rng.normal(size=(BATCH, 1)), jnp.float32)}
    return {"x": x, "y": jnp.asarray(rng.integers(0, data.classes, BATCH), jnp.int32)}


def new_state(module: ModuleType, batch: dict[str, jax.Array]) -> Any:
    """A fresh TrainState for the module's model, as `beagle run` builds it."""
    inputs = batch["image"] if "image" in batch else batch["x"]
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1), "sample": jax.random.key(2)}
    if hasattr(module, "model_graphs"):  # model.kind: nnx
        from beagle.runner.nnx_model import NnxModel

        model: Any = NnxModel(module, object, ["image" if "image" in batch else "x"])
        variables = model.init({"params": keys["params"], "dropout": keys["dropout"]}, inputs)
    else:
        model = module.make_model()
        variables = model.init(keys, inputs, train=False)
    extra = {"batch_stats": variables["batch_stats"]} if "batch_stats" in variables else {}
    spec = load_spec(ROOT / "specs" / f"{module.__name__.rpartition('.')[2]}.yaml").spec
    if spec.precision is not None and spec.precision.compute == "float16":
        extra["dynamic_scale"] = initial_dynamic_scale()
    return module.TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=module.make_optimizer(), **extra
    )


def copy(tree: Any) -> Any:
    """A copy that survives donation of the original."""
    return jax.tree.map(jnp.array, tree)


def leaves_equal(a: Any, b: Any) -> bool:
    return all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def expected_metric_names(name: str) -> set[str]:
    spec = load_spec(ROOT / "specs" / f"{name}.yaml").spec
    names = {"loss", *spec.metrics}
    if len(spec.losses) > 1:
        names |= set(spec.losses)
    return names


@pytest.mark.parametrize("name", [path.stem for path in SPECS])
def test_generated_module_imports_and_runs_one_real_jitted_step(name: str) -> None:
    module = module_of(name)
    spec = load_spec(ROOT / "specs" / f"{name}.yaml").spec
    batch = tiny_batch(name)
    state = new_state(module, batch)
    before = copy(state.params)
    # auto's train_step scans any number of stacked batches: 3 stands for any of them.
    steps = 3 if spec.train.steps_per_call == "auto" else int(spec.train.steps_per_call)
    calls = 1 if spec.optimizer.accumulate is None else spec.optimizer.accumulate
    for call in range(calls):
        if steps > 1:
            batches = jax.tree.map(lambda leaf: jnp.stack([leaf] * steps), batch)
            keys = jax.random.split(jax.random.key(call), steps)
            state, metrics = module.train_step(state, batches, keys)
        else:
            state, metrics = module.train_step(state, batch, jax.random.key(call))
    float16 = spec.precision is not None and spec.precision.compute == "float16"
    train_names = expected_metric_names(name) | (
        {"loss_scale_skips"}
        if float16
        else {"skipped_steps"}
        if spec.train.nan == "skip"
        else set()
    )
    assert set(metrics) == train_names
    for value in metrics.values():
        assert value.shape == ((steps,) if steps > 1 else ())
        assert bool(jnp.all(jnp.isfinite(value)))
    assert not leaves_equal(before, state.params), "the optimizer step changed nothing"
    _, val_metrics = module.val_step(state, batch, jax.random.key(99))
    assert set(val_metrics) == expected_metric_names(name)
    assert all(value.shape == () for value in val_metrics.values())


def test_batch_norm_statistics_change_in_training_and_not_in_validation() -> None:
    module = module_of("digits_cnn")
    batch = tiny_batch("digits_cnn")
    state = new_state(module, batch)
    initial = copy(state.batch_stats)
    state, _ = module.train_step(state, batch, jax.random.key(0))
    trained = copy(state.batch_stats)
    assert not leaves_equal(initial, trained)
    after_val, _ = module.val_step(state, batch, jax.random.key(1))
    assert leaves_equal(trained, after_val.batch_stats)


def test_dropout_draws_a_different_mask_for_each_step_key_and_none_in_eval() -> None:
    module = module_of("digits_cnn")
    batch = tiny_batch("digits_cnn")
    state = new_state(module, batch)

    def train_loss(key: int) -> float:
        _, metrics = module.train_step(copy(state), batch, jax.random.key(key))
        return float(metrics["loss"])

    assert train_loss(0) == train_loss(0)
    assert train_loss(0) != train_loss(1)
    val_losses = {
        float(module.val_step(state, batch, jax.random.key(key))[1]["loss"]) for key in (0, 1)
    }
    assert len(val_losses) == 1


def test_two_loss_spec_reports_the_weighted_sum_as_loss() -> None:
    module = module_of("vae")
    batch = tiny_batch("vae")
    state = new_state(module, batch)
    weights = {n: e.weight for n, e in load_spec(ROOT / "specs/vae.yaml").spec.losses.items()}
    _, metrics = module.train_step(copy(state), batch, jax.random.key(0))
    total = sum(weights[n] * float(metrics[n]) for n in weights)
    assert float(metrics["loss"]) == pytest.approx(total, rel=1e-6)
    assert float(metrics["kl"]) > 0.0
    _, val_metrics = module.val_step(state, batch, jax.random.key(0))
    val_total = sum(weights[n] * float(val_metrics[n]) for n in weights)
    assert float(val_metrics["loss"]) == pytest.approx(val_total, rel=1e-6)


def test_vae_sample_stream_differs_between_step_keys() -> None:
    module = module_of("vae")
    batch = tiny_batch("vae")
    state = new_state(module, batch)
    losses = {
        float(module.train_step(copy(state), batch, jax.random.key(k))[1]["recon"]) for k in (0, 1)
    }
    assert len(losses) == 2


def test_nan_skip_keeps_the_whole_state_on_a_non_finite_batch() -> None:
    module = module_of("schedule_clip_accum")
    batch = tiny_batch("schedule_clip_accum")
    state = new_state(module, batch)
    state, metrics = module.train_step(state, batch, jax.random.key(0))
    assert int(metrics["skipped_steps"]) == 0
    kept = copy(state)
    bad = {**batch, "x": batch["x"].at[0, 0].set(jnp.nan)}
    state, metrics = module.train_step(state, bad, jax.random.key(1))
    assert int(metrics["skipped_steps"]) == 1
    assert not bool(jnp.isfinite(metrics["loss"]))
    assert leaves_equal(kept, state)  # params, optimizer and accumulator state, step
    state, metrics = module.train_step(state, batch, jax.random.key(2))
    assert int(metrics["skipped_steps"]) == 0 and int(state.step) == 2


def test_steps_per_call_four_equals_four_single_steps() -> None:
    module = module_of("mlp_scan")
    batches = [tiny_batch("mlp_scan", seed) for seed in range(4)]
    keys = jax.random.split(jax.random.key(7), 4)
    state = new_state(module, batches[0])
    single = copy(state)
    one_step = module.train_one_step  # jitted and donating, like train_step
    single_losses = []
    for batch, key in zip(batches, keys, strict=True):
        single, metrics = one_step(single, batch, key)
        single_losses.append(float(metrics["loss"]))
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *batches)
    fused, fused_metrics = module.train_step(state, stacked, keys)
    assert fused_metrics["loss"].shape == (4,)
    np.testing.assert_allclose(np.asarray(fused_metrics["loss"]), single_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(fused.params), jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert int(fused.step) == int(single.step) == 4


def test_mismatched_prediction_and_target_shapes_fail_at_trace_naming_the_term() -> None:
    module = module_of("regression_mlp")
    batch = tiny_batch("regression_mlp")
    state = new_state(module, batch)
    flat = {**batch, "y": batch["y"][:, 0]}  # (4,) against predictions of shape (4, 1)
    with pytest.raises(ValueError, match=r"loss term 'mse': predictions of shape \(4, 1\)"):
        module.train_step(state, flat, jax.random.key(0))
    with pytest.raises(ValueError, match="loss term 'mse'"):
        module.val_step(state, flat, jax.random.key(0))


def test_builtin_metrics_and_losses_compute_what_the_spec_language_says() -> None:
    module = module_of("classifier_metrics")
    logits = jnp.array([[3.0, 2.0, 1.0, 0.0, -1.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    labels = jnp.array([1, 0])
    outputs, batch = {"outputs": logits}, {"x": jnp.zeros((2, 16)), "y": labels}
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]])}
    metrics = module.compute_metrics(params, outputs, batch)
    assert float(metrics["accuracy"]) == 0.0
    assert float(metrics["top2_accuracy"]) == 0.5
    expected_ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    assert float(metrics["cross_entropy"]) == pytest.approx(float(expected_ce), rel=1e-6)
    _, terms = module.compute_losses(params, outputs, batch)
    assert float(terms["weight_decay"]) == pytest.approx(0.5 * (1 + 4 + 9))
    vae = module_of("vae")
    mean, logvar = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, jnp.log(2.0)]])
    kl = 0.5 * ((1.0 + 1.0 - 1.0 - 0.0) + (2.0 + 0.0 - 1.0 - float(jnp.log(2.0))))
    assert float(vae.gaussian_kl(mean, logvar)) == pytest.approx(kl, rel=1e-6)
    regression = module_of("regression_mlp")
    predictions, targets = jnp.array([[1.0], [3.0]]), jnp.array([[2.0], [1.0]])
    loss, _ = regression.compute_losses({"outputs": predictions}, {"y": targets})
    assert float(loss) == pytest.approx((1.0 + 4.0) / 2)  # mean squared error, not halved
    mae = regression.compute_metrics({"outputs": predictions}, {"y": targets})["mae"]
    assert float(mae) == pytest.approx(1.5)
