"""Compile only what must be compiled, once; per step, no device work besides the step.

The host keys must be jax's keys bit for bit (the runs stay identical), a whole `beagle
run` compiles each program once and none of beagle's key programs, and `train_loop`
executes one program per step: the step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from beagle.training import rng

ROOT = Path(__file__).resolve().parents[1]

# 2 epochs of 300 steps (a full chunk of 256 and a remainder of 44), validation after each.
W0 = """\
version: 1
name: w0
model: {class: beagle.models:MLP, args: {features: [2]}}
data:
  source: synthetic
  task: classification
  classes: 2
  features: 8
  examples: 12000
  batch_size: 32
optimizer: {name: adam, learning_rate: 0.01}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
metrics:
  accuracy: {fn: accuracy, args: {logits: outputs.outputs, labels: batch.y}}
train: {epochs: 2}
validation: {every: 1}
log: {plot: false}
"""

COMPILED = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.e-]+) sec")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31 - 1])
def test_host_keys_are_jax_keys_bit_for_bit(seed: int) -> None:
    root = jax.random.PRNGKey(seed)
    assert np.array_equal(rng.host_seed_key(seed), np.asarray(root))
    key = rng.host_key(root)
    assert isinstance(key, np.ndarray)
    steps = np.concatenate([np.arange(2000), [2**31 - 1, 2**31, 2**32 - 1]])
    want = jax.vmap(lambda s: jax.random.fold_in(root, s))(steps.astype(np.uint32))
    assert np.array_equal(rng.fold_in_host(key, steps), np.asarray(want))
    assert np.array_equal(rng.host_split(key, 3), np.asarray(jax.random.split(root, 3)))
    chunk = rng.step_keys(key, 1000, 4, steps_per_call=2)
    assert chunk.shape == (4, 2, 2)
    assert np.array_equal(chunk[3, 1], np.asarray(jax.random.fold_in(root, 1007)))
    val_root = jax.random.fold_in(jax.random.fold_in(root, rng.VALIDATION_STREAM), 5)
    assert np.array_equal(rng.validation_key(key, 5), np.asarray(val_root))


def test_typed_keys_fall_back_to_one_stacked_program() -> None:
    root = jax.random.key(3)
    assert rng.host_key(root) is root
    rng.step_keys(root, 0, 256)  # compiled here, or by an earlier test of this process
    compiled = rng._stacked_keys._cache_size()
    for first, calls in [(0, 256), (256, 40), (296, 1)]:
        keys = rng.step_keys(root, first, calls)
        assert keys.shape[0] >= calls
        last = jax.random.fold_in(root, first + calls - 1)
        assert np.array_equal(jax.random.key_data(keys[calls - 1]), jax.random.key_data(last))
    assert rng._stacked_keys._cache_size() == compiled  # one length, whatever the chunk's


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_run_compiles_each_program_once_and_no_key_programs(
    tmp_path: Path, optimizer: str
) -> None:
    (tmp_path / "w0.yaml").write_text(W0.replace("name: adam", f"name: {optimizer}"))
    done = subprocess.run(
        [sys.executable, "-m", "beagle", "run", "w0.yaml", "--no-progress"],
        cwd=tmp_path,
        env=child_env(JAX_LOG_COMPILES="1", BEAGLE_CACHE_DIR="off"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = [name for name, _ in COMPILED.findall(done.stderr)]
    assert "jit(train_step)" in names and "jit(val_step)" in names
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"compiled more than once: {repeated} (all: {names})"
    keys = [n for n in names if re.search(r"threefry|step_keys|split|fold_in|unstack|squeeze", n)]
    assert not keys, f"key programs compiled: {keys}"
    # the user's steps, the model's init and the optimizer's (adam: its zeros made by one
    # program, not one per parameter shape), beagle's fold of the metrics, nothing else
    allowed = {"jit(train_step)", "jit(val_step)", "jit(<lambda>)", "jit(init_fn)", "jit(_fold)"}
    assert set(names) <= allowed, names
    # plain SGD keeps no arrays: nothing to compile for its state
    assert ("jit(init_fn)" in names) == (optimizer == "adam"), names


def test_the_model_is_initialised_as_by_a_default_jit_bit_for_bit(tmp_path: Path) -> None:
    # beagle compiles the init with less optimisation (beagle.xla.RUN_ONCE_COMPILE): it
    # must give the parameters and statistics a default-compiled init gives.
    from beagle.runner import wiring
    from beagle.spec import load_spec

    cnn = (
        "model: {class: beagle.models:CNN, args: {features: [8, 16], num_classes: 2},"
        " batch_norm: true, outputs: logits}"
    )
    path = tmp_path / "cnn.yaml"
    path.write_text(
        W0.replace("model: {class: beagle.models:MLP, args: {features: [2]}}", cnn).replace(
            "outputs.outputs", "outputs.logits"
        )
    )
    loaded = load_spec(path, imports="import")
    model = wiring.build_model(loaded, None)
    batch = {"x": np.random.default_rng(0).normal(size=(32, 12, 12, 1)).astype(np.float32)}
    key = jax.random.PRNGKey(5)
    ours = wiring.init_variables(loaded, model, batch, key)
    rngs = wiring.init_rngs(loaded, key)
    default = jax.jit(lambda r, x: model.init(r, x, train=False))(rngs, batch["x"])
    assert jax.tree.structure(ours) == jax.tree.structure(default)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(default), strict=True):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def executions(steps: int, *flags: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "device_work.py"), str(steps), *flags],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    counts: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def test_train_loop_executes_only_the_step_per_step() -> None:
    # 300 more steps: 300 more executions of the step, and one more fold (a chunk of 256
    # steps is folded by one program; 300 and 600 steps make 2 and 3 chunks).
    short, long = executions(300), executions(600)
    assert short["jit(train_step)"] == 300 and long["jit(train_step)"] == 600
    others = {name: long.get(name, 0) - short.get(name, 0) for name in {*short, *long}}
    del others["jit(train_step)"]
    assert sum(others.values()) <= 1, f"per-step device work besides the step: {others}"


def test_calls_of_several_steps_over_device_batches_stack_them_in_one_program() -> None:
    # steps_per_call=8 over batches already on the device: per call, one program stacks
    # the 8 batches (jnp.stack outside a jit would run one per leaf and batch) and one
    # runs the 8 steps. 296 steps = 37 calls; 584 = 73 calls, one fold more.
    short, long = executions(296, "--device-batches", "8"), executions(584, "--device-batches", "8")
    assert short["jit(scanned_step)"] == 37 and long["jit(scanned_step)"] == 73
    assert long["jit(_stack_on_device)"] - short["jit(_stack_on_device)"] == 36
    others = {name: long.get(name, 0) - short.get(name, 0) for name in {*short, *long}}
    del others["jit(scanned_step)"], others["jit(_stack_on_device)"]
    assert sum(others.values()) <= 1, f"per-call device work besides stack and step: {others}"


def test_copy_state_false_trains_the_callers_state_without_a_copy() -> None:
    import optax
    from flax.training.train_state import TrainState

    from beagle.training import train_loop

    @jax.jit(donate_argnums=0)
    def step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array) -> tuple:
        grads = jax.grad(lambda p: (p["w"] * batch["x"]).sum())(state.params)
        return state.apply_gradients(grads=grads), {"loss": batch["x"].sum()}

    def fresh() -> TrainState:
        return TrainState.create(apply_fn=None, params={"w": jax.numpy.ones(3)}, tx=optax.sgd(0.1))

    batches = lambda: ({"x": np.ones((2, 3), np.float32)} for _ in range(4))  # noqa: E731
    kept, given = fresh(), fresh()
    copied, _ = train_loop(kept, step, batches, 1, 4, jax.random.PRNGKey(0), show_progress=False)
    trained, _ = train_loop(
        given, step, batches, 1, 4, jax.random.PRNGKey(0), show_progress=False, copy_state=False
    )
    assert not kept.params["w"].is_deleted()  # the default keeps the caller's state valid
    assert given.params["w"].is_deleted()  # given up: the first step donated its buffers
    assert np.array_equal(np.asarray(copied.params["w"]), np.asarray(trained.params["w"]))


def test_a_run_that_owns_its_state_copies_it_on_no_device_not_even_to_save(
    tmp_path: Path,
) -> None:
    counts = executions(300, "--no-copy", "--checkpoint", str(tmp_path / "checkpoints"))
    assert counts["jit(train_step)"] == 300
    assert (tmp_path / "checkpoints" / "checkpoint_300").is_dir()
    assert "jit(_copy_tree)" not in counts, counts  # the save copies to the host only
