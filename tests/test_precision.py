"""`precision`: bfloat16 and float16 compute with float32 parameters, losses and checkpoints.

The demo trains in bfloat16 to the float32 demo's accuracy with float32 parameters in its
checkpoint; float16 overflows are skipped and counted (not a fault under `nan: stop`),
and the loss scale survives a resume; a class without `dtype`/`param_dtype` is a spec
error; the generated step computes losses and metrics from float32 outputs.
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beagle import api
from beagle.compiler import compile_spec
from beagle.models import MLP
from beagle.runner import run_spec
from beagle.runner.result import COUNT_SUFFIXES, RunResult
from beagle.runner.wiring import import_module_from_text
from beagle.spec import LoadedSpec, SpecError, load_spec
from beagle.training import initial_dynamic_scale
from beagle.training.metrics import COUNT_METRICS, LOSS_SCALE_SKIPS, StepMetricSums

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, *overrides: str) -> LoadedSpec:
    loaded = load_spec(path, overrides, imports="import")
    assert isinstance(loaded, LoadedSpec), loaded
    return loaded


def saved_dtypes(checkpoint: Path) -> dict[str, str]:
    """Each leaf of the checkpoint's `state` item, by path, as orbax stored it."""
    import orbax.checkpoint as ocp

    metadata = ocp.StandardCheckpointer().metadata(checkpoint / "state")
    tree = getattr(metadata, "item_metadata", metadata)
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda leaf: hasattr(leaf, "dtype"))[
        0
    ]
    return {jax.tree_util.keystr(path): str(np.dtype(leaf.dtype)) for path, leaf in flat}


# ----------------------------------------------------------------------- bfloat16 demo


@pytest.fixture(scope="module")
def bf16_digits(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The bfloat16 demo, 5 epochs (the float32 demo is past 0.97 by then too)."""
    folder = tmp_path_factory.mktemp("bf16")
    return run_spec(
        load(
            ROOT / "specs/digits_cnn_bf16.yaml",
            "train.epochs=5",
            f"checkpoint.dir={folder / 'checkpoints'}",
            f"log.dir={folder / 'run'}",
        ),
        restart=False,
        progress=False,
    )


def test_bfloat16_digits_demo_reaches_097_with_float32_params_in_the_checkpoint(
    bf16_digits: RunResult,
) -> None:
    assert bf16_digits.status == "done"
    assert bf16_digits.history["val_accuracy"][-1] >= 0.97
    assert bf16_digits.checkpoint_dir is not None
    latest = max(bf16_digits.checkpoint_dir.glob("checkpoint_*"), key=lambda p: p.stat().st_mtime)
    dtypes = saved_dtypes(latest)
    params = {path: dtype for path, dtype in dtypes.items() if "params" in path}
    stats = {path: dtype for path, dtype in dtypes.items() if "batch_stats" in path}
    assert len(params) >= 6 and set(params.values()) == {"float32"}, params
    assert len(stats) == 4 and set(stats.values()) == {"float32"}, stats  # BatchNorm stays f32
    # Adam's moments too: everything floating in the checkpoint is float32.
    floating = {d for d in dtypes.values() if d.startswith(("float", "bfloat"))}
    assert floating == {"float32"}, dtypes


def test_bfloat16_run_builds_the_model_computing_in_bfloat16(bf16_digits: RunResult) -> None:
    state = bf16_digits.state
    model = state.apply_fn.__self__
    assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32
    logits = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats},
        jnp.ones((2, 8, 8, 1), jnp.float32),
        train=False,
    )
    assert logits.dtype == jnp.bfloat16


BF16_CLASSIFIER = """\
version: 1
name: bf16_classifier
model: {class: "beagle.models:MLP", args: {features: [8, 3]}}
data: {source: synthetic, task: classification, classes: 3, batch_size: 4}
optimizer: {name: sgd, learning_rate: 0.1}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
metrics:
  accuracy: {fn: accuracy, args: {logits: outputs.outputs, labels: batch.y}}
train: {epochs: 1}
precision: {compute: bfloat16}
"""


def test_generated_step_computes_losses_and_metrics_from_float32_outputs(in_tmp: Path) -> None:
    spec = in_tmp / "bf16_classifier.yaml"
    spec.write_text(BF16_CLASSIFIER)
    loaded = load(spec)
    text = compile_spec(loaded.spec, loaded.source_name)
    module = import_module_from_text(text, "_bf16_classifier", str(spec))
    model = module.make_model()
    assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32
    rng = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, 3, 4), jnp.int32),
    }
    params = model.init(jax.random.key(0), batch["x"])["params"]
    assert model.apply({"params": params}, batch["x"]).dtype == jnp.bfloat16
    state = module.TrainState.create(
        apply_fn=model.apply, params=params, tx=module.make_optimizer()
    )
    _, val_metrics = module.val_step(state, batch, jax.random.key(2))
    state, metrics = module.train_step(state, batch, jax.random.key(3))
    # Cross-entropy of bfloat16 logits is bfloat16: float32 here means the cast came first.
    for values in (metrics, val_metrics):
        assert {name: value.dtype for name, value in values.items()} == {
            "loss": jnp.float32,
            "accuracy": jnp.float32,
        }
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_builtin_mlp_computes_in_dtype_and_keeps_params_float32() -> None:
    mlp = MLP(features=[4, 1], dtype=jnp.float16, param_dtype=jnp.float32)
    variables = mlp.init(jax.random.key(0), jnp.ones((2, 3)))
    assert mlp.apply(variables, jnp.ones((2, 3))).dtype == jnp.float16
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


# ---------------------------------------------------------------------- float16 scaling

FP16_SPEC = """\
version: 1
name: fp16_{tag}
seed: 2
model:
  class: beagle.models:MLP
  args: {{features: [16, 1]}}
data: {{source: npz, train: {folder}/big.npz, batch_size: 32, shuffle: false}}
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: {epochs}, nan: stop}}
checkpoint: {{every: 1, keep: 2}}
log: {{dir: {folder}/runs/{tag}, plot: false}}
precision: {{compute: float16}}
"""


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Targets around 2e3: at the initial loss scale (2**16) the float16 gradients
    overflow (65504 is float16's largest), so the first steps of a run are skipped."""
    folder = tmp_path_factory.mktemp("fp16")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4)).astype(np.float32)
    y = (2.0e3 * np.tanh(x @ np.array([[1.0], [-2.0], [0.5], [0.3]]))).astype(np.float32)
    np.savez(folder / "big.npz", x=x, y=y)
    return folder


def run_fp16(folder: Path, tag: str, epochs: int, *overrides: str) -> RunResult:
    path = folder / f"{tag}.yaml"
    path.write_text(FP16_SPEC.format(tag=tag, epochs=epochs, folder=folder))
    return run_spec(load(path, *overrides), restart=False, progress=False)


@pytest.fixture(scope="module")
def fp16_straight(fp16_folder: Path) -> RunResult:
    """Two float16 epochs of 16 steps, uninterrupted."""
    return run_fp16(fp16_folder, "straight", 2)


def test_float16_overflow_is_skipped_and_counted_and_the_run_goes_on(
    fp16_straight: RunResult,
) -> None:
    result = fp16_straight
    assert result.status == "done" and result.epochs == 2  # nan: stop did not end it
    skips = result.history["train_loss_scale_skips"]
    assert 5 <= skips[0] < 16 and skips[1] == 0, skips  # the scale halves until it fits
    assert "train_skipped_steps" not in result.history
    assert all(np.isfinite(v) for v in result.history["train_loss"])
    leaves = jax.tree.leaves(result.state.params)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)
    assert float(result.state.dynamic_scale.scale) == 2.0 ** (16 - skips[0])
    # The skipped steps kept the old state: only the applied steps advanced it.
    assert int(result.state.step) == 32 - sum(skips)


def test_float16_step_that_overflows_keeps_params_and_optimizer_state() -> None:
    module = importlib.import_module("generated.regression_mlp_fp16")
    model = module.make_model()
    x = jnp.ones((4, 8), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    state = module.TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=module.make_optimizer(),
        dynamic_scale=initial_dynamic_scale(),
    )
    before = jax.tree.map(jnp.array, (state.params, state.opt_state, state.step))
    huge = {"x": x, "y": jnp.full((4, 1), 3.0e4, jnp.float32)}
    state, metrics = module.train_step(state, huge, jax.random.key(1))
    assert int(metrics["loss_scale_skips"]) == 1
    assert bool(jnp.isfinite(metrics["loss"]))  # the float32 loss is finite; its gradient is not
    after = jax.tree.leaves((state.params, state.opt_state, state.step))
    for a, b in zip(jax.tree.leaves(before), after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(state.dynamic_scale.scale) == 2.0**15
    small = {"x": x, "y": jnp.zeros((4, 1), jnp.float32)}
    state, metrics = module.train_step(state, small, jax.random.key(2))
    assert int(metrics["loss_scale_skips"]) == 0 and int(state.step) == 1


FP16_SCAN = """\
version: 1
name: fp16_scan
model: {class: "beagle.models:MLP", args: {features: [8, 1]}}
data: {source: synthetic, task: regression, features: 3, batch_size: 4}
optimizer: {name: adam, learning_rate: 0.01}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 1, steps_per_call: 2}
precision: {compute: float16}
"""


def test_float16_scanned_steps_equal_single_steps_overflow_included(in_tmp: Path) -> None:
    spec = in_tmp / "fp16_scan.yaml"
    spec.write_text(FP16_SCAN)
    modules = []
    for steps in (1, 2):
        loaded = load(spec, f"train.steps_per_call={steps}")
        text = compile_spec(loaded.spec, loaded.source_name)
        modules.append(import_module_from_text(text, f"_fp16_scan_{steps}", str(spec)))
    single, scanned = modules
    x = jnp.ones((4, 3), jnp.float32)
    model = single.make_model()
    params = model.init(jax.random.key(0), x)["params"]

    def fresh() -> Any:
        return single.TrainState.create(
            apply_fn=model.apply,
            params=jax.tree.map(jnp.copy, params),
            tx=single.make_optimizer(),
            dynamic_scale=initial_dynamic_scale(),
        )

    # The first batch overflows at the initial scale, the second trains.
    batches = [
        {"x": x, "y": jnp.full((4, 1), 3.0e4, jnp.float32)},
        {"x": x, "y": jnp.zeros((4, 1), jnp.float32)},
    ]
    keys = jax.random.split(jax.random.key(1), 2)
    state = fresh()
    singles = []
    for batch, key in zip(batches, keys, strict=True):
        state, metrics = single.train_step(state, batch, key)
        singles.append(metrics)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *batches)
    fused, fused_metrics = scanned.train_step(fresh(), stacked, keys)
    assert [int(m["loss_scale_skips"]) for m in singles] == [1, 0]
    np.testing.assert_array_equal(fused_metrics["loss_scale_skips"], [1, 0])
    np.testing.assert_array_equal(fused_metrics["loss"], [m["loss"] for m in singles])
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(fused), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(fused.dynamic_scale.scale) == 2.0**15


def test_float16_resume_equals_the_uninterrupted_run_loss_scale_included(
    fp16_folder: Path, fp16_straight: RunResult
) -> None:
    first = run_fp16(fp16_folder, "resumed", 1)
    # The resume starts from a loss scale far below the initial one: a fresh scale would
    # overflow (and skip) again.
    assert first.history["train_loss_scale_skips"][0] >= 5
    assert float(first.state.dynamic_scale.scale) < 2.0**11
    resumed = run_fp16(fp16_folder, "resumed", 1, "train.epochs=2")
    assert resumed.resumed_from is not None
    assert resumed.history == fp16_straight.history
    scales = [r.state.dynamic_scale for r in (fp16_straight, resumed)]
    assert [(float(d.scale), int(d.fin_steps)) for d in scales] == [(16.0, 19)] * 2
    for a, b in zip(
        jax.tree.leaves(fp16_straight.state), jax.tree.leaves(resumed.state), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_loss_scale_skips_are_counted_apart_and_never_a_fault() -> None:
    sums = StepMetricSums(stop_on_skipped=True)
    sums.add_step({"loss": jnp.float32(2.0), LOSS_SCALE_SKIPS: jnp.int32(0)}, 4)
    sums.add_step({"loss": jnp.float32(jnp.inf), LOSS_SCALE_SKIPS: jnp.int32(1)}, 4)
    sums.fold()
    sums.add_step({"loss": jnp.float32(4.0), LOSS_SCALE_SKIPS: jnp.int32(0)}, 4)
    restored = StepMetricSums.from_json(sums.to_json(), stop_on_skipped=True)
    for each in (sums, restored):
        totals = each.fetch()
        assert totals is not None and totals.bad_step is None
        assert totals.history_values(each.has_skipped) == {"loss": 3.0, LOSS_SCALE_SKIPS: 1.0}
    # A non-finite loss that is not an overflow still stops the run.
    sums.add_step({"loss": jnp.float32(jnp.nan), LOSS_SCALE_SKIPS: jnp.int32(0)}, 4)
    totals = sums.fetch()
    assert totals is not None and totals.bad_step == 3


def test_runner_counts_the_metrics_the_runtime_counts() -> None:
    assert set(COUNT_SUFFIXES) == COUNT_METRICS


# ------------------------------------------------------------------------- spec errors

NO_DTYPE_MODEL = """\
import flax.linen as nn


class Plain(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features)(x)
"""

NO_DTYPE_SPEC = """\
version: 1
name: plain
model: {class: "plain_model:Plain", args: {features: 1}, train_flag: null}
data: {source: synthetic, task: regression, batch_size: 32}
optimizer: {name: adam, learning_rate: 0.01}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 1}
precision:
  compute: bfloat16
"""


def test_model_class_without_dtype_keywords_is_a_spec_error_at_precision(in_tmp: Path) -> None:
    (in_tmp / "plain_model.py").write_text(NO_DTYPE_MODEL)
    spec = in_tmp / "plain.yaml"
    spec.write_text(NO_DTYPE_SPEC)
    problems = api.check([spec])
    assert len(problems) == 1, problems
    text = str(problems[0])
    assert text.startswith(f"{spec}:9:1: precision: "), text
    assert "plain_model:Plain does not take dtype or param_dtype" in text
    assert "hint:" in text
    with pytest.raises(SpecError):
        run_spec(load(spec), restart=False, progress=False)
    assert not (in_tmp / "runs").exists()
    # Without precision the same class is fine: nothing is passed.
    spec.write_text(NO_DTYPE_SPEC.split("precision:")[0])
    assert api.check([spec]) == []


def test_model_args_setting_dtype_beside_precision_is_a_spec_error(in_tmp: Path) -> None:
    spec = in_tmp / "twice.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            version: 1
            name: twice
            model: {class: "beagle.models:MLP", args: {features: [1], dtype: 1}}
            data: {source: synthetic, task: regression, batch_size: 32}
            optimizer: {name: adam, learning_rate: 0.01}
            losses:
              mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
            train: {epochs: 1}
            precision: {compute: float16}
            """
        )
    )
    problems = api.check([spec])
    assert [p.path for p in problems] == ["model.args.dtype"], problems


# ----------------------------------------------------------------------- NNX


def test_an_nnx_model_takes_precision_like_a_linen_one(in_tmp: Path) -> None:
    """`precision` reaches an NNX model the same way: the built-in NNX MLP computes in
    float16 with float32 parameters, and the float16 state carries its loss scale."""
    result = run_spec(
        load(
            ROOT / "specs/nnx_mlp.yaml",
            "precision.compute=float16",
            "train.epochs=2",
            f"log.dir={in_tmp / 'run'}",
        ),
        restart=False,
        progress=False,
    )
    state = result.state
    dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(state.params)}
    assert dtypes == {"float32"}
    assert state.dynamic_scale is not None and float(state.dynamic_scale.scale) > 0
    (module,) = result.run_dir.glob("*.py")
    text = module.read_text()
    assert "dtype=jnp.float16" in text and "param_dtype=jnp.float32" in text
    assert len(result.history[f"train_{LOSS_SCALE_SKIPS}"]) == 2
    assert np.isfinite(result.history["train_loss"]).all()
