"""`model.kind: nnx`: NNX models train as their linen twins do, resume exactly, and serve.

The equivalence tests build each spec's state the way `beagle run` does (`trace.wire`),
copy the linen twin's initial variables into the NNX state (the built-ins share one
parameter tree), and take the same 20 steps on the same batches and keys.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli_run import assert_same_state, beagle, final_state, start, wait_for

from beagle.compiler import compile_spec
from beagle.runner import run_spec, trace, trace_spec, wiring
from beagle.runner.export import export_run
from beagle.runner.inference import evaluate, load_run
from beagle.spec import LoadedSpec, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20


def load(path: Path, *overrides: str) -> LoadedSpec:
    loaded = load_spec(path, overrides, imports="import")
    assert isinstance(loaded, LoadedSpec), loaded
    return loaded


def wired(name: str, *overrides: str) -> trace.Wired:
    loaded = load(ROOT / "specs" / f"{name}.yaml", *overrides)
    module = wiring.import_module_from_text(
        compile_spec(loaded.spec, loaded.source_name), f"_nnx_test_{name}", f"<{name}>"
    )
    return trace.wire(loaded, module)


def batches(run: trace.Wired, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    epoch = 0
    while len(found) < count:
        found += [dict(batch) for batch in run.data.source.train_iterator(epoch)]
        epoch += 1
    return found[:count]


def train(run: trace.Wired, state: Any, data: list[dict[str, Any]]) -> Any:
    for step, batch in enumerate(data):
        state, _ = run.module.train_step(state, batch, jax.random.fold_in(run.rng_key, step))
    return state


def assert_close(a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


def test_nnx_mlp_takes_the_linen_mlps_20_steps_to_the_same_params() -> None:
    linen, nnx_run = wired("regression_mlp"), wired("nnx_mlp")
    data = batches(linen, STEPS)
    start_params = jax.tree.map(jnp.array, linen.state.params)
    nnx_state = nnx_run.state.replace(
        params=start_params, opt_state=nnx_run.state.tx.init(start_params)
    )
    assert_close(train(nnx_run, nnx_state, data).params, train(linen, linen.state, data).params)


def test_nnx_cnn_with_batch_norm_takes_the_linen_cnns_20_steps_to_the_same_state() -> None:
    no_dropout = "model.args.dropout_rate=0.0"
    linen, nnx_run = wired("digits_cnn", no_dropout), wired("nnx_cnn", no_dropout)
    data = batches(linen, STEPS)
    params = jax.tree.map(jnp.array, linen.state.params)
    nnx_state = nnx_run.state.replace(
        params=params,
        batch_stats=jax.tree.map(jnp.array, linen.state.batch_stats),
        opt_state=nnx_run.state.tx.init(params),
    )
    nnx_final, linen_final = train(nnx_run, nnx_state, data), train(linen, linen.state, data)
    assert_close(nnx_final.params, linen_final.params)
    assert_close(nnx_final.batch_stats, linen_final.batch_stats)
    batch = data[0]
    np.testing.assert_allclose(
        nnx_run.module.val_step(nnx_final, batch, nnx_run.rng_key)[1]["loss"],
        linen.module.val_step(linen_final, batch, linen.rng_key)[1]["loss"],
        rtol=1e-5,
    )


def test_nnx_dropout_k_scanned_steps_equal_k_single_steps() -> None:
    k = 4
    run = wired("nnx_cnn", f"train.steps_per_call={k}", "train.batches_per_epoch=20")
    one_step = jax.jit(run.module.train_one_step)  # the step the scan runs, alone
    data = batches(run, k)
    keys = [jax.random.fold_in(run.rng_key, step) for step in range(k)]
    state = run.state
    for batch, key in zip(data, keys, strict=True):
        state, _ = one_step(state, batch, key)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *data)
    fused, _ = run.module.train_step(jax.tree.map(jnp.array, run.state), stacked, jnp.stack(keys))
    assert_close(fused.params, state.params)
    assert_close(fused.batch_stats, state.batch_stats)
    # Dropout is on: a step's mask comes from its key, so another key trains differently.
    first, _ = one_step(run.state, data[0], keys[0])
    other, _ = one_step(run.state, data[0], jax.random.fold_in(run.rng_key, 99))
    assert not np.array_equal(
        np.asarray(jax.tree.leaves(other.params)[0]), np.asarray(jax.tree.leaves(first.params)[0])
    )


KIND_MISMATCH = """\
version: 1
name: kinds
model:
  kind: {kind}
  class: {cls}
  args: {{features: [8, 1]}}
data: {{source: synthetic, task: regression, batch_size: 32}}
optimizer: {{name: adam, learning_rate: 0.01}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train: {{epochs: 1}}
"""


@pytest.mark.parametrize(
    ("kind", "cls", "says"),
    [
        ("nnx", "beagle.models:MLP", "model.kind is nnx but beagle.models:MLP is a flax.linen"),
        ("linen", "beagle.nnx_models:MLP", "model.kind is linen (the default) but beagle.nnx"),
    ],
)
def test_a_kind_that_does_not_match_the_class_points_at_model_kind(
    in_tmp: Path, kind: str, cls: str, says: str
) -> None:
    path = in_tmp / "kinds.yaml"
    path.write_text(KIND_MISMATCH.format(kind=kind, cls=cls))
    (problem,) = trace_spec(load(path))
    assert (problem.path, problem.line, problem.column) == ("model.kind", 4, 9)
    assert says in problem.message
    if kind == "nnx":  # and once through the command line: file:line:col, exit 2
        checked = beagle(in_tmp, "check", "kinds.yaml")
        assert checked.returncode == 2
        assert "kinds.yaml:4:9: model.kind" in checked.stdout + checked.stderr


def test_train_flag_with_an_nnx_model_is_a_spec_error_at_its_line(in_tmp: Path) -> None:
    path = in_tmp / "flag.yaml"
    text = KIND_MISMATCH.format(kind="nnx", cls="beagle.nnx_models:MLP")
    path.write_text(text.replace("  args:", "  train_flag: train\n  args:"))
    with pytest.raises(SpecError) as error:
        load(path)
    (problem,) = error.value.problems
    assert problem.path == "model.train_flag" and problem.line == 6
    assert "does not apply to an nnx model" in problem.message


def test_nnx_digits_cnn_reaches_097_and_a_sigkilled_run_reruns_bit_identical(
    in_tmp: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The demo with dropout and BatchNorm, in NNX: the accuracy of the linen demo; killed
    anywhere and re-run (resumed, dropout reseeded per step), it ends bit for bit where
    the uninterrupted run ended. Then `beagle eval` and `predict` use the finished run."""
    spec_text = (ROOT / "specs" / "nnx_cnn.yaml").read_text()
    (in_tmp / "spec.yaml").write_text(spec_text)
    reference = run_spec(load(in_tmp / "spec.yaml"), restart=False, progress=False)
    assert reference.history["val_accuracy"][-1] >= 0.97, reference.history["val_accuracy"]

    killed = tmp_path_factory.mktemp("killed")
    (killed / "spec.yaml").write_text(spec_text)
    process = start(killed, "run", "spec.yaml", "--no-progress")
    checkpoints = killed / "runs/nnx_cnn/checkpoints"
    wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob("checkpoint_*")), 120)
    time.sleep(random.uniform(0.0, 1.0))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL  # it was still training when killed
    resumed = beagle(killed, "run", "spec.yaml", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    history = "runs/nnx_cnn/history.json"
    assert (killed / history).read_text() == (in_tmp / history).read_text()
    assert_same_state(final_state(killed, "spec.yaml"), final_state(in_tmp, "spec.yaml"))

    run = load_run(in_tmp / "runs/nnx_cnn", "latest")
    assert set(run.variables) == {"params", "batch_stats"}
    evaluated = evaluate(run, "val")["metrics"]
    recorded = json.loads((in_tmp / history).read_text())
    assert evaluated["val_accuracy"] == pytest.approx(recorded["val_accuracy"][-1], abs=1e-6)
    images = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    logits = run.predict({"image": images}, batch_size=2)["logits"]
    assert logits.shape == (5, 10) and np.all(np.isfinite(logits))
    export_run(run, in_tmp / "exported")  # jax.export of the eval-mode NNX forward pass
    exported = jax.export.deserialize((in_tmp / "exported/model.jax").read_bytes())
    np.testing.assert_allclose(exported.call(images), logits, rtol=1e-5, atol=1e-5)


def test_an_nnx_model_asking_for_an_undeclared_stream_points_at_model(in_tmp: Path) -> None:
    text = (ROOT / "specs" / "nnx_cnn.yaml").read_text()
    path = in_tmp / "streams.yaml"
    path.write_text(text.replace("  rngs: [dropout]", "  # no rngs"))
    (problem,) = trace_spec(load(path))
    assert problem.path == "model" and "'dropout'" in problem.message
    assert problem.hint == "add `rngs: [dropout]` under model"


def test_only_a_built_in_nnx_model_is_sized_from_the_data(in_tmp: Path) -> None:
    built_in = load(ROOT / "specs" / "nnx_mlp.yaml").spec
    text = compile_spec(built_in, "nnx_mlp.yaml")
    assert 'input_shape=batch["x"].shape[1:], rngs=rngs)' in text
    assert "train=" not in text  # the mode is the module's own: train() / eval()
    user = built_in.model_copy(
        update={"model": built_in.model.model_copy(update={"class_path": "mymodels:Net"})}
    )
    assert "return Net(features=[64, 64, 1], rngs=rngs)" in compile_spec(user, "user.yaml")
