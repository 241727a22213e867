"""Freshly compiled steps across the template's feature combinations, each run for real.

The six golden modules cover six points of the template's switches; these tests compile
specs that cover every pair of them (BatchNorm, `nan: skip`, `steps_per_call: 2`, two RNG
streams, dict outputs, gradient accumulation), with `tests/step_combination_model.py`'s
`ProbeNet`, and check on real steps what each combination promises: a key per stream and
per step, BatchNorm statistics that move in training only, a skipped step that keeps the
whole state, K scanned steps equal to K single steps, accumulation that updates every N.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beagle.compiler import compile_spec
from beagle.spec import load_spec

BATCH = 4
FEATURES = 3
K = 2  # steps_per_call when that feature is on
EVERY = 2  # optimizer.accumulate when that feature is on


class Features(NamedTuple):
    batch_norm: bool
    nan_skip: bool
    scan: bool  # steps_per_call: K
    two_streams: bool  # rngs: [dropout, noise] rather than [dropout]
    dict_outputs: bool  # the model returns a dict rather than a tuple
    accumulate: bool  # optimizer.accumulate: EVERY


def _pairwise_rows() -> list[Features]:
    """A covering array of strength 2: every pair of features takes all four values.

    Each column is a distinct 6-bit word of weight 3 whose first bit is 0: two such words
    both have 0 in the first row, each has a 1 where the other has a 0, and they share a
    1 (3 + 3 > 5). Row 0 has every feature off, row 1 every feature on.
    """
    columns = [(0, *(int(i in ones) for i in range(1, 6))) for ones in
               itertools.combinations(range(1, 6), 3)][: len(Features._fields)]  # fmt: skip
    return [Features(*(bool(column[r]) for column in columns)) for r in range(6)]


ROWS = _pairwise_rows()


def _id(features: Features) -> str:
    names = [name for name, on in zip(Features._fields, features, strict=True) if on]
    return "-".join(names) or "plain"


def test_the_rows_cover_every_pair_of_features_both_ways() -> None:
    assert len(ROWS) <= 10 and len(set(ROWS)) == len(ROWS)
    assert Features(*[False] * 6) in ROWS and Features(*[True] * 6) in ROWS
    for a, b in itertools.combinations(range(len(Features._fields)), 2):
        seen = {(row[a], row[b]) for row in ROWS}
        assert seen == {(False, False), (False, True), (True, False), (True, True)}, (a, b)


def _streams(features: Features) -> list[str]:
    return ["dropout", "noise"] if features.two_streams else ["dropout"]


def spec_document(name: str, features: Features) -> dict[str, Any]:
    streams = _streams(features)
    outputs: list[str] | dict[str, str]
    if features.dict_outputs:  # the model's dict key -> the spec's output name
        outputs = {"prediction": "pred", **{s: f"{s}_draws" for s in streams}}
    else:
        outputs = ["pred", *(f"{s}_draws" for s in streams)]
    optimizer: dict[str, Any] = {"name": "adam", "learning_rate": 0.01}
    if features.accumulate:
        optimizer["accumulate"] = EVERY
    return {
        "version": 1,
        "name": name,
        "model": {
            "class": "step_combination_model:ProbeNet",
            "args": {
                "batch_norm": features.batch_norm,
                "streams": len(streams),
                "as_dict": features.dict_outputs,
            },
            "batch_norm": features.batch_norm,
            "train_flag": "train",
            "rngs": streams,
            "outputs": outputs,
        },
        "data": {
            "source": "synthetic",
            "task": "regression",
            "features": FEATURES,
            "batch_size": BATCH,
        },
        "optimizer": optimizer,
        "losses": {
            "mse": {"fn": "mse", "args": {"predictions": "outputs.pred", "targets": "batch.y"}}
        },
        "metrics": {
            f"{s}_draw": {
                "fn": "step_combination_model:first_draw",
                "args": {"draws": f"outputs.{s}_draws"},
            }
            for s in streams
        },
        "train": {
            "epochs": 1,
            "steps_per_call": K if features.scan else 1,
            "nan": "skip" if features.nan_skip else "stop",
        },
    }


@dataclass(frozen=True)
class Compiled:
    """A module compiled from a spec of `features`, and how to take steps with it."""

    features: Features
    module: ModuleType
    one_step: Callable[..., tuple[Any, dict[str, jax.Array]]]  # one batch, one key, jitted
    initial: Any  # a fresh TrainState, as `beagle run` builds it

    @property
    def steps_per_call(self) -> int:
        return K if self.features.scan else 1

    def call(self, state: Any, batches: list[dict], keys: list[jax.Array]) -> tuple[Any, dict]:
        """One `train_step` call over `steps_per_call` batches; metrics with a step axis."""
        assert len(batches) == len(keys) == self.steps_per_call
        if not self.features.scan:
            state, metrics = self.module.train_step(state, batches[0], keys[0])
            return state, {name: value[None] for name, value in metrics.items()}
        stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *batches)
        return self.module.train_step(state, stacked, jnp.stack(keys))

    def new_state(self) -> Any:
        """A copy of the initial state (the steps donate theirs)."""
        return copy(self.initial)


def _initial_state(module: ModuleType, features: Features) -> Any:
    model = module.make_model()
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1), "noise": jax.random.key(2)}
    variables = jax.jit(functools.partial(model.init, train=False))(keys, batch(0)["x"])
    extra = {"batch_stats": variables["batch_stats"]} if features.batch_norm else {}
    return module.TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=module.make_optimizer(), **extra
    )


def _import_text(text: str, name: str) -> ModuleType:
    module = ModuleType(name)
    exec(compile(text, f"<{name}.py>", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Features], Compiled]:
    """Compile (once per module of tests) the spec of a row, through the whole front end."""
    folder = tmp_path_factory.mktemp("combination_specs")
    cache: dict[Features, Compiled] = {}

    def get(features: Features) -> Compiled:
        if features not in cache:
            name = f"combo_{ROWS.index(features)}"
            path = folder / f"{name}.yaml"
            path.write_text(json.dumps(spec_document(name, features)))  # JSON is YAML
            loaded = load_spec(path, imports="import")
            module = _import_text(compile_spec(loaded.spec, loaded.source_name), name)
            one_step = jax.jit(module.train_one_step) if features.scan else module.train_step
            initial = _initial_state(module, features)
            cache[features] = Compiled(features, module, one_step, initial)
        return cache[features]

    return get


def batch(seed: int, *, nan: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, FEATURES)).astype(np.float32)
    if nan:
        x[0, 0] = np.nan
    return {"x": x, "y": rng.normal(size=(BATCH, 1)).astype(np.float32)}


ROOT_KEY = jax.random.key(42)
_fold_in = jax.jit(jax.random.fold_in)


def step_key(step: int) -> jax.Array:
    return _fold_in(ROOT_KEY, np.uint32(step))  # as train_loop derives them


@jax.jit
def copy(tree: Any) -> Any:
    """A copy that survives donation of the original."""
    return jax.tree.map(jnp.copy, tree)


def leaves_equal(a: Any, b: Any) -> bool:
    la, lb = jax.device_get(jax.tree.leaves(a)), jax.device_get(jax.tree.leaves(b))
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def assert_trees_close(a: Any, b: Any) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def take_steps(c: Compiled, state: Any, first: int, calls: int) -> tuple[Any, list[dict]]:
    """`calls` train_step calls from global step `first`, on good batches."""
    metrics = []
    for call in range(calls):
        steps = range(first + call * c.steps_per_call, first + (call + 1) * c.steps_per_call)
        state, m = c.call(state, [batch(s) for s in steps], [step_key(s) for s in steps])
        metrics.append(m)
    return state, metrics


@pytest.mark.parametrize("features", ROWS, ids=_id)
def test_each_stream_gets_its_own_key_and_each_step_a_new_one(
    compiled: Callable[[Features], Compiled], features: Features
) -> None:
    c = compiled(features)
    _, metrics = take_steps(c, c.new_state(), 0, calls=2)
    streams = _streams(features)
    expected = {"loss", *(f"{s}_draw" for s in streams)} | (
        {"skipped_steps"} if features.nan_skip else set()
    )
    for m in metrics:
        assert set(m) == expected
        assert all(value.shape == (c.steps_per_call,) for value in m.values())
    draws = {s: np.concatenate([np.asarray(m[f"{s}_draw"]) for m in metrics]) for s in streams}
    for stream, values in draws.items():
        assert len(set(values.tolist())) == 2 * c.steps_per_call, (stream, values)
    if features.two_streams:
        assert not set(draws["dropout"].tolist()) & set(draws["noise"].tolist()), draws


@pytest.mark.parametrize("features", ROWS, ids=_id)
def test_validation_is_deterministic_and_leaves_the_state_alone(
    compiled: Callable[[Features], Compiled], features: Features
) -> None:
    c = compiled(features)
    state = c.new_state()
    initial = copy(state)
    state, _ = take_steps(c, state, 0, calls=1)
    trained = copy(state)
    if features.batch_norm:
        assert not leaves_equal(initial.batch_stats, trained.batch_stats), "not updated"
    after, val_a = c.module.val_step(state, batch(7), step_key(100))
    _, val_b = c.module.val_step(state, batch(7), step_key(101))
    assert leaves_equal(after, trained)  # batch statistics included
    assert float(val_a["loss"]) == float(val_b["loss"])  # no dropout, running averages
    assert "skipped_steps" not in val_a


@pytest.mark.parametrize("features", [r for r in ROWS if r.batch_norm], ids=_id)
def test_batch_statistics_follow_every_training_step(
    compiled: Callable[[Features], Compiled], features: Features
) -> None:
    c = compiled(features)
    state = c.new_state()
    seen = [copy(state.batch_stats)]
    for first in range(0, 3 * c.steps_per_call, c.steps_per_call):
        state, _ = take_steps(c, state, first, calls=1)
        seen.append(copy(state.batch_stats))
    for before, after in itertools.pairwise(seen):
        assert not leaves_equal(before, after)


@pytest.mark.parametrize("features", [r for r in ROWS if r.nan_skip], ids=_id)
def test_a_skipped_step_keeps_the_whole_state(
    compiled: Callable[[Features], Compiled], features: Features
) -> None:
    c = compiled(features)
    state, _ = take_steps(c, c.new_state(), 0, calls=1)  # optimizer and stats under way
    kept = copy(state)
    bad = [batch(10 + i, nan=True) for i in range(c.steps_per_call)]
    state, metrics = c.call(state, bad, [step_key(10 + i) for i in range(c.steps_per_call)])
    assert metrics["skipped_steps"].tolist() == [1] * c.steps_per_call
    assert leaves_equal(kept, state)  # params, batch_stats, optimizer (accumulator), step
    # A good step next to a skipped one: only the good one counts.
    good_then_bad = [batch(20), *bad[1:]] if features.scan else [batch(20)]
    state, metrics = c.call(state, good_then_bad, [step_key(20 + i) for i in range(len(bad))])
    assert metrics["skipped_steps"].tolist() == [0] + [1] * (c.steps_per_call - 1)
    alone, _ = c.one_step(copy(kept), batch(20), step_key(20))
    assert int(state.step) == int(kept.step) + 1
    assert_trees_close(state, alone)


@pytest.mark.parametrize("features", [r for r in ROWS if r.scan], ids=_id)
def test_k_scanned_steps_equal_k_single_steps(
    compiled: Callable[[Features], Compiled], features: Features
) -> None:
    c = compiled(features)
    state = c.new_state()
    single = copy(state)
    single_metrics = []
    for s in range(K):
        single, m = c.one_step(single, batch(s), step_key(s))
        single_metrics.append(m)
    fused, fused_metrics = c.call(
        state, [batch(s) for s in range(K)], [step_key(s) for s in range(K)]
    )
    assert int(fused.step) == int(single.step) == K
    assert_trees_close(fused, single)  # params, batch_stats, optimizer state
    for name, values in fused_metrics.items():
        expected = [float(m[name]) for m in single_metrics]
        np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("features", ROWS, ids=_id)
def test_parameters_move_every_step_or_every_accumulated_n(
    compiled: Callable[[Features], Compiled], features: Features
) -> None:
    c = compiled(features)
    state = c.new_state()
    params = [copy(state.params)]
    for s in range(2 * EVERY):
        state, _ = c.one_step(state, batch(s), step_key(s))
        params.append(copy(state.params))
    moved = [not leaves_equal(a, b) for a, b in itertools.pairwise(params)]
    every = EVERY if features.accumulate else 1
    assert moved == [(s + 1) % every == 0 for s in range(2 * EVERY)]
