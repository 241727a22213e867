"""`beagle.catalog` against the installed optax, and its facts on tiny arrays.

The catalog imports nothing heavy, so nothing else notices when optax renames a function
or an argument: these tests do. They also check the facts the rest of beagle reads from
the catalog (same shape, integer labels, higher is better, batch keys) on real arrays, so
a fact that is wrong fails here rather than as a confusing trace error or a wrong "best".
"""

from __future__ import annotations

import ast
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jinja2
import numpy as np
import optax
import pytest

from beagle import catalog, data
from beagle.runner import trace_spec
from beagle.runner.run import _maximise
from beagle.spec import LoadedSpec, SpecError, load_spec
from beagle.spec.models import DataSpec

BUILTINS = [("loss", b) for b in catalog.LOSSES.values()] + [
    ("metric", b) for b in catalog.METRICS.values()
]
IDS = [f"{kind}-{b.name}" for kind, b in BUILTINS]

BATCH, CLASSES = 4, 3  # different, so (batch,) against (batch, classes) cannot broadcast


def _helpers() -> dict[str, Callable[..., Any]]:
    """The helper functions a generated module defines, rendered from the real macros."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("beagle", "templates"))
    macros = environment.get_template("macros.jinja").module
    namespace: dict[str, Any] = {"jax": jax, "jnp": jnp}
    for name in catalog.HELPERS:
        exec(getattr(macros, name)(), namespace)
    return {name: namespace[name] for name in catalog.HELPERS}


HELPERS = _helpers()


def evaluate(builtin: catalog.Builtin, **args: Any) -> jax.Array:
    """The catalog's expression for `builtin`, run on `args` as the generated module runs it."""
    values = {name: ast.literal_eval(text) for name, text in builtin.defaults}
    values.update(args)
    names = {param: f"arg_{param}" for param in builtin.params}
    namespace = {"jax": jax, "jnp": jnp, "optax": optax, **HELPERS}
    namespace.update({names[param]: value for param, value in values.items()})
    return eval(builtin.expr.format(**names), namespace)  # noqa: S307 - the catalog's text


def _optax_calls(expr: str) -> list[tuple[str, ast.Call]]:
    """Every `optax.<path>(...)` call in a catalog expression, with its dotted path."""
    tree = ast.parse(expr.format_map(_Placeholder()), mode="eval")
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.insert(0, func.attr)
                func = func.value
            if isinstance(func, ast.Name) and func.id == "optax":
                calls.append((".".join(parts), node))
    return calls


class _Placeholder(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return key


@pytest.mark.parametrize(("kind", "builtin"), BUILTINS, ids=IDS)
def test_catalog_expressions_call_optax_functions_with_arguments_they_accept(
    kind: str, builtin: catalog.Builtin
) -> None:
    calls = _optax_calls(builtin.expr)
    assert calls or "optax" not in builtin.uses, f"{builtin.name} says it uses optax"
    for path, call in calls:
        target: Any = optax
        for part in path.split("."):
            assert hasattr(target, part), f"optax has no {path} ({kind} {builtin.name})"
            target = getattr(target, part)
        signature = inspect.signature(target)
        signature.bind(
            *(object() for _ in call.args), **{k.arg: object() for k in call.keywords if k.arg}
        )


@pytest.mark.parametrize("name", sorted(catalog.OPTIMIZERS))
def test_catalog_optimizers_take_a_learning_rate_and_build_a_transformation(name: str) -> None:
    optimizer = getattr(optax, name)(learning_rate=0.1)
    assert isinstance(optimizer, optax.GradientTransformation)


@pytest.mark.parametrize("name", sorted(catalog.SCHEDULES))
def test_catalog_schedules_are_optax_schedules_of_plain_values(name: str) -> None:
    """A spec writes a schedule's arguments as YAML values: none of them takes a function."""
    schedule = getattr(optax, name)
    assert schedule is getattr(optax.schedules, name)
    for parameter in inspect.signature(schedule).parameters.values():
        assert "Callable" not in str(parameter.annotation), (name, parameter.name)


def test_the_wrappers_lowering_emits_take_its_keywords() -> None:
    """`optax.chain(clip_by_global_norm(c), opt)` and `MultiSteps(opt, every_k_schedule=N)`."""
    chained = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(learning_rate=0.1))
    wrapped = optax.MultiSteps(chained, every_k_schedule=2).gradient_transformation()
    params = {"w": jnp.ones(2)}
    updates, _ = wrapped.update({"w": jnp.ones(2)}, wrapped.init(params), params)
    assert updates["w"].shape == (2,)


def _arguments(builtin: catalog.Builtin, good: bool) -> dict[str, Any]:
    """Arguments of the right shapes and kinds; `good`: a perfect prediction."""
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, CLASSES, BATCH), jnp.int32)
    args: dict[str, Any] = {}
    if builtin.integer_labels:
        scores, label = builtin.integer_labels
        target = labels if good else (labels + 1) % CLASSES
        args[scores] = 5.0 * jax.nn.one_hot(target, CLASSES)
        args[label] = labels
    elif builtin.same_shape == ("predictions", "targets"):
        truth = jnp.asarray(rng.uniform(0.1, 0.9, (BATCH, 1)), jnp.float32)
        args["targets"] = truth
        args["predictions"] = truth if good else truth + 1.0
    elif builtin.same_shape == ("logits", "labels"):  # one-hot or binary labels
        one_hot = jax.nn.one_hot(labels, CLASSES)
        args["labels"] = one_hot
        args["logits"] = 5.0 * (2.0 * one_hot - 1.0) * (1.0 if good else -1.0)
    elif builtin.same_shape == ("mean", "logvar"):  # KL from N(0, 1): zero at N(0, 1)
        args["mean"] = args["logvar"] = jnp.full((BATCH, 2), 0.0 if good else 1.0)
    elif builtin.params == ("tree",):
        args["tree"] = {"w": jnp.full((2, 2), 0.0 if good else 1.0)}
    else:
        raise AssertionError(f"no shape fact tells how to call {builtin.name}: add one")
    if "k" in builtin.params:
        args["k"] = 1
    return args


@pytest.mark.parametrize(("kind", "builtin"), BUILTINS, ids=IDS)
def test_each_builtin_gives_a_scalar_on_arguments_its_facts_describe(
    kind: str, builtin: catalog.Builtin
) -> None:
    value = evaluate(builtin, **_arguments(builtin, good=True))
    assert value.shape == () and bool(jnp.isfinite(value))


SAME_SHAPE = [(k, b) for k, b in BUILTINS if b.same_shape]
INTEGER_LABELS = [(k, b) for k, b in BUILTINS if b.integer_labels]


def _broken_or_changed(
    builtin: catalog.Builtin, right: dict[str, Any], wrong: dict[str, Any]
) -> bool:
    """Whether `wrong` arguments fail, or silently give another value than `right` ones."""
    expected = evaluate(builtin, **right)
    try:
        got = evaluate(builtin, **wrong)
    except (TypeError, ValueError):
        return True
    return got.shape != () or not bool(jnp.allclose(got, expected))


@pytest.mark.parametrize(
    ("kind", "builtin"), SAME_SHAPE, ids=[f"{k}-{b.name}" for k, b in SAME_SHAPE]
)
def test_same_shape_builtins_go_wrong_on_mismatched_shapes(
    kind: str, builtin: catalog.Builtin
) -> None:
    """(batch, 2) against (batch, 1) broadcasts without a word: the rule the trace checks."""
    rng = np.random.default_rng(1)
    first, second = builtin.same_shape
    a = jnp.asarray(rng.uniform(0.1, 0.9, (BATCH, 2)), jnp.float32)
    b = jnp.asarray(rng.uniform(0.1, 0.9, (BATCH, 2)), jnp.float32)
    assert _broken_or_changed(builtin, {first: a, second: b}, {first: a, second: b[:, :1]})


@pytest.mark.parametrize(
    ("kind", "builtin"), INTEGER_LABELS, ids=[f"{k}-{b.name}" for k, b in INTEGER_LABELS]
)
def test_integer_label_builtins_go_wrong_on_one_hot_labels(
    kind: str, builtin: catalog.Builtin
) -> None:
    right = _arguments(builtin, good=False)
    scores, label = builtin.integer_labels
    wrong = {**right, label: jax.nn.one_hot(right[label], CLASSES)}
    assert _broken_or_changed(builtin, right, wrong)


def test_builtins_optax_would_broadcast_silently_have_the_same_shape_rule() -> None:
    """The trace once kept its own list, with three built-ins the catalog lacked; it was right.

    optax's softmax_cross_entropy and sigmoid_binary_cross_entropy, and gaussian_kl,
    broadcast mismatched arguments without a word, so each needs the rule.
    """
    for name in ("softmax_cross_entropy_onehot", "sigmoid_binary_cross_entropy", "gaussian_kl"):
        assert len(catalog.LOSSES[name].same_shape) == 2, name


@pytest.mark.parametrize("builtin", list(catalog.METRICS.values()), ids=list(catalog.METRICS))
def test_maximise_agrees_with_a_perfect_and_a_wrong_prediction(builtin: catalog.Builtin) -> None:
    perfect = float(evaluate(builtin, **_arguments(builtin, good=True)))
    wrong = float(evaluate(builtin, **_arguments(builtin, good=False)))
    assert perfect != wrong
    assert (perfect > wrong) == builtin.maximise


@pytest.mark.parametrize("builtin", list(catalog.LOSSES.values()), ids=list(catalog.LOSSES))
def test_losses_are_smaller_for_a_perfect_prediction(builtin: catalog.Builtin) -> None:
    perfect = float(evaluate(builtin, **_arguments(builtin, good=True)))
    wrong = float(evaluate(builtin, **_arguments(builtin, good=False)))
    assert perfect < wrong and not builtin.maximise


def test_sources_are_the_specs_data_sources() -> None:
    (union, *_) = typing.get_args(DataSpec)
    models = typing.get_args(union)
    names = {typing.get_args(m.model_fields["source"].annotation)[0] for m in models}
    assert names == set(catalog.SOURCES)


def test_builtin_sources_yield_the_batch_keys_the_catalog_gives() -> None:
    synthetic = data.synthetic(8, task="regression", examples=32)
    assert tuple(synthetic.sample_batch()) == catalog.SOURCES["synthetic"].batch_keys
    digits = data.digits(8)
    assert tuple(digits.sample_batch()) == catalog.SOURCES["digits"].batch_keys


# -- the readers: each takes the fact from the catalog ---------------------------------

CLASSIFIER = """\
version: 1
name: facts
model:
  class: beagle.models:MLP
  args: {features: [8, 1]}
data:
  {source: synthetic, task: classification, classes: 2, examples: 64, features: 4, batch_size: 16}
optimizer: {name: sgd, learning_rate: 0.1}
losses:
  bce: {fn: sigmoid_binary_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
metrics:
  hits: {fn: accuracy, args: {logits: outputs.outputs, labels: batch.y}}
  score_gap: {fn: mae, args: {predictions: outputs.outputs, targets: outputs.outputs}}
train: {epochs: 1}
"""


def _load(tmp_path: Path, text: str) -> LoadedSpec:
    path = tmp_path / "facts.yaml"
    path.write_text(text)
    loaded = load_spec(path, (), imports="import")
    assert isinstance(loaded, LoadedSpec), loaded
    return loaded


def test_check_finds_the_same_shape_rule_of_a_builtin_only_the_old_trace_list_had(
    tmp_path: Path,
) -> None:
    """Logits (batch, 1) against labels (batch,): sigmoid_binary_cross_entropy's rule."""
    (problem,) = trace_spec(_load(tmp_path, CLASSIFIER))
    assert problem.path == "losses.bce.args.labels"
    assert "has shape (16,)" in problem.message and "needs the same shape" in problem.message


def test_best_values_follow_the_catalog_not_the_metric_name(tmp_path: Path) -> None:
    loaded = _load(tmp_path, CLASSIFIER)
    # `hits` has no hint in its name but is an accuracy; `score_gap` sounds like a score
    # but is an error.
    assert _maximise(loaded, "val_hits") is True
    assert _maximise(loaded, "train_score_gap") is False
    assert _maximise(loaded, "bce") is False


def test_the_front_end_reads_batch_keys_from_the_catalog(tmp_path: Path) -> None:
    text = CLASSIFIER.replace("labels: batch.y}}\nmetrics", "labels: batch.label}}\nmetrics")
    path = tmp_path / "facts.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        load_spec(path, (), imports="import")
    (problem,) = error.value.problems
    assert problem.path == "losses.bce.args.labels"
    assert "its batches have the keys 'x' and 'y'" in str(problem)


def test_every_literal_argument_belongs_to_a_builtin_and_says_what_it_takes() -> None:
    """`LITERAL_ARGS` is the one home of "this argument is a number, not a reference":
    the front end, the schema and lowering all read it."""
    params = {
        p for table in (catalog.LOSSES, catalog.METRICS) for b in table.values() for p in b.params
    }
    assert set(catalog.LITERAL_ARGS) <= params
    assert catalog.LITERAL_ARGS["k"].words == "a positive integer"
    assert catalog.LITERAL_ARGS["delta"].words == "a positive number"
