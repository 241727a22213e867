"""The JSON Schema of the spec validates every example spec and rejects malformed ones."""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from doc_paths import doc_paths
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from beagle.spec import Problem, SpecError, load_spec, spec_json_schema
from beagle.spec.loader import Locator
from beagle.spec.reference import key_reference
from beagle.spec.semantics import check_semantics
from beagle.spec.validate import check_structure, drop_null_mappings

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "version": 1,
    "name": "tiny",
    "model": {"class": "beagle.models:MLP", "args": {"features": [16, 1]}},
    "data": {"source": "synthetic", "task": "regression", "batch_size": 32},
    "optimizer": {"name": "adam", "learning_rate": 1e-3},
    "losses": {
        "mse": {"fn": "mse", "args": {"predictions": "outputs.outputs", "targets": "batch.y"}}
    },
    "train": {"epochs": 2},
}


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = spec_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_schema_is_valid_json_schema_and_serialisable() -> None:
    schema = spec_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    json.dumps(schema)
    _validator()


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_schema_validates_every_example_spec(path: Path) -> None:
    document = YAML(typ="safe").load(path.read_text())
    _validator().validate(document)


def test_schema_validates_a_minimal_spec() -> None:
    _validator().validate(MINIMAL)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (("lossses",), {}),
        (("version",), 2),
        (("name",), "Bad-Name"),
        (("train", "epochs"), 0),
        (("optimizer", "learning_rate"), "high"),
        (("data", "source"), "mnist"),
        (("model", "class"), "not an import path"),
        (("losses", "mse", "args", "targets"), {"a": 1}),
    ],
)
def test_schema_rejects_malformed_specs(change: tuple[str, ...], value: Any) -> None:
    import copy

    document = copy.deepcopy(MINIMAL)
    parent = document
    for key in change[:-1]:
        parent = parent[key]
    parent[change[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(document)


# --- held-out invalid specs -----------------------------------------------------------

HELD_OUT = sorted((Path(__file__).parent / "schema_invalid").glob("*.yaml"))


def test_there_are_at_least_22_held_out_invalid_specs() -> None:
    assert len(HELD_OUT) >= 22


@pytest.mark.parametrize("path", HELD_OUT, ids=[p.stem for p in HELD_OUT])
def test_schema_rejects_every_held_out_invalid_spec(path: Path) -> None:
    """Each file holds one mistake the front end reports; the schema must catch it too."""
    with pytest.raises(SpecError):
        load_spec(path, imports="none")
    document = YAML(typ="safe", pure=True).load(path.read_text())
    assert list(_validator().iter_errors(document)), f"the schema accepts {path.name}"
    # The YAML language server reads JSON Schema draft 7: the rules must hold there too.
    draft7 = jsonschema.Draft7Validator(spec_json_schema())
    assert list(draft7.iter_errors(document)), f"as draft 7, the schema accepts {path.name}"


def test_no_rule_sits_beside_a_ref_where_draft_7_would_ignore_it() -> None:
    for where, node in _schema_nodes(spec_json_schema()):
        if isinstance(node, dict) and "$ref" in node:
            assert set(node) <= {"$ref", "description", "default"}, where


@pytest.mark.parametrize(
    ("change", "value"),
    [
        (("losses", "mse"), None),  # renamed below: one loss may be called `loss`
        (("metrics",), None),  # `metrics:` with nothing below it
        (("model", "args"), None),
        (("losses", "mse", "args", "targets"), "params"),
        (("model", "args"), {"features": [16, 1], "opts": {"a": [0.5, None, "s", True]}}),
        (("optimizer", "learning_rate"), 1.0e308),
        (("optimizer", "args"), {"b1": 0.9, "mask": None, "nesterov": True}),
        (("model", "rngs"), ["dropout", "sample"]),
        (("data", "val_fraction"), 0.0),  # no validation section: nothing held out is fine
        (("losses", "mse", "weight"), -0.5),
        (("model", "outputs"), {"a": "outputs", "b": "outputs_2"}),
        (("early_stopping",), {"metric": "train_loss", "mode": "min", "patience": 1}),
    ],
)
def test_schema_accepts_valid_specs_near_its_rules(change: tuple[str, ...], value: Any) -> None:
    import copy

    document = copy.deepcopy(MINIMAL)
    if change == ("losses", "mse"):
        document["losses"] = {"loss": document["losses"]["mse"]}
    else:
        parent = document
        for key in change[:-1]:
            parent = parent[key]
        parent[change[-1]] = value
    assert _models_problems(document) == []
    _validator().validate(document)


# --- descriptions ---------------------------------------------------------------------


def _schema_nodes(node: Any, where: str = "") -> list[tuple[str, Any]]:
    found = [(where, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_schema_nodes(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_schema_nodes(value, f"{where}/{index}"))
    return found


def test_every_key_and_definition_in_the_schema_has_a_description() -> None:
    schema = spec_json_schema()
    missing = [
        f"{where}/{key}"
        for where, node in _schema_nodes(schema)
        # `if` clauses are conditions on keys described elsewhere
        if where.endswith("/properties") and isinstance(node, dict) and "/if/" not in where
        for key, value in node.items()
        if not value.get("description")
    ]
    missing += [name for name, value in schema["$defs"].items() if not value.get("description")]
    assert not missing, missing
    assert schema["description"]


# --- the schema's verdict is the models' verdict ---------------------------------------
#
# For generated documents (valid ones, and ones with unknown names, bad identifiers,
# keywords, non-finite and out-of-range numbers, wrong types, nulls, extra and missing
# keys), `jsonschema` rejects exactly when the front end (the pydantic models, then
# `beagle.spec.semantics`) reports a problem that a JSON Schema can express. The problems
# it cannot express are listed here and set aside; a document with only those must pass
# the schema (so the schema is never stricter than the models).

_BEYOND_JSON_SCHEMA: tuple[tuple[str, str], ...] = (
    # (a fragment of the problem's message, why JSON Schema cannot say it)
    ("is not a declared model output", "a reference to another section (model.outputs)"),
    ("has no batch key", "a reference to another section (data.source's batch keys)"),
    ("is not a history key", "history keys come from the losses, metrics and validation"),
    ("needs validation, and the spec has no validation", "relates two sections"),
    ("has the name of a loss", "metric and loss names are keys of two sections"),
    ("has no known length", "data.source python requires keys of train and validation"),
    ("validation needs", "validation requires data.val or a val_fraction above 0"),
)


def _excluded(problem: Problem, doc: dict[str, Any]) -> bool:
    if any(fragment in problem.message for fragment, _ in _BEYOND_JSON_SCHEMA):
        return True
    # Distinct values of an `outputs` mapping: JSON Schema has uniqueItems for arrays only.
    outputs = doc.get("model", {}).get("outputs") if isinstance(doc.get("model"), dict) else None
    return "is given more than once" in problem.message and isinstance(outputs, dict)


def _models_problems(doc: Any) -> list[Problem]:
    """What `load_spec` reports for this document (the stages after YAML parsing)."""
    import copy

    doc = copy.deepcopy(doc)
    locator = Locator("x.yaml")
    drop_null_mappings(doc)
    _, problems = check_structure(doc, locator)
    return [*problems, *check_semantics(doc, locator)]


_RICH: dict[str, Any] = {
    "version": 1,
    "name": "tiny",
    "seed": 3,
    "model": {
        "class": "beagle.models:MLP",
        "args": {"features": [4, 2], "scale": 0.5, "options": {"a": [1.5, True, None, "s"]}},
        "input": ["batch.x"],
        "batch_norm": False,
        "train_flag": "train",
        "rngs": ["dropout"],
        "outputs": ["logits", "aux"],
    },
    "data": {
        "source": "synthetic",
        "task": "classification",
        "batch_size": 8,
        "classes": 3,
        "noise": 0.1,
        "val_fraction": 0.25,
        "examples": 64,
        "features": 4,
        "shuffle": True,
        "drop_remainder": True,
    },
    "optimizer": {
        "name": "adamw",
        "learning_rate": {
            "schedule": "linear_schedule",
            "init_value": 0.1,
            "end_value": 0.01,
            "transition_steps": 10,
        },
        "args": {"weight_decay": 0.01, "mask": None, "nesterov": False, "betas": [0.9]},
        "clip_grad_norm": 1.5,
        "accumulate": 2,
    },
    "losses": {
        "ce": {
            "fn": "softmax_cross_entropy",
            "args": {"logits": "outputs.logits", "labels": "batch.y"},
            "weight": 0.5,
        },
        "hub": {
            "fn": "huber",
            "args": {"predictions": "outputs.aux", "targets": "outputs.aux", "delta": 0.5},
        },
        "own": {
            "fn": "pkg.mod:focal",
            "args": {"logits": "outputs.logits", "gamma": 2.5, "flag": True, "ks": [1, 2]},
            "weight": -3,
        },
    },
    "metrics": {
        "acc": {"fn": "accuracy", "args": {"logits": "outputs.logits", "labels": "batch.y"}},
        "top": {
            "fn": "top_k_accuracy",
            "args": {"logits": "outputs.logits", "labels": "batch.y", "k": 2},
        },
    },
    "train": {"epochs": 2, "batches_per_epoch": 4, "steps_per_call": 2, "nan": "skip"},
    "early_stopping": {"metric": "val_loss", "mode": "min", "patience": 1, "min_delta": 0.5},
    "validation": {"every": 1, "batches": 2},
    "checkpoint": {"dir": "c", "every": 1, "keep": 1, "best": {"metric": "val_acc", "mode": "max"}},
    "parallel": {"data": "auto"},
    "log": {"dir": "runs", "plot": True, "tensorboard": False},
}

_SMALL: dict[str, Any] = {
    "version": 1,
    "name": "small",
    "model": {"class": "pkg:Net", "outputs": {"out": "predictions"}},
    "data": {"source": "digits", "batch_size": 4},
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "losses": {
        "mse": {
            "fn": "mse",
            "args": {"predictions": "outputs.predictions", "targets": "batch.label"},
        }
    },
    "train": {"epochs": 1},
}

# Values that make a field wrong in every way the models check, and some that are right.
# Left out on purpose: integral floats where an integer is wanted (`1.0` is an integer to
# JSON Schema), and strings ending in a newline (Python's `re`, which `jsonschema` uses,
# lets `$` match before a final newline; the ECMA-262 regexes of JSON Schema and of editors
# do not).
_INTS = st.sampled_from([-1, 0, 1, 2, 3, 70])
_FLOATS = st.sampled_from([0.5, -1.5, 1e-3, 2.5, float("inf"), -float("inf"), float("nan")])
_STRINGS = st.sampled_from(
    [
        "", "x", "adam", "adamm", "mse", "huber", "accuracy", "top_k_accuracy",
        "softmax_crossentropy", "linear_schedule", "linear_decay", "batch.x", "batch.y",
        "outputs.logits", "outputs.nope", "params", "pkg.mod:fn", "pkg.class:fn", "pkg.mod",
        "class", "lambda", "None", "A-b", "val-acc", "é", "1abc", "a" * 70, "auto", "min",
        "skip", "digits", "python", "npz", "regression", "loss", "skipped_steps",
        "learning_rate", "dropout", "train", "val_loss",
    ]
)  # fmt: skip
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    _INTS,
    _FLOATS,
    _STRINGS,
    st.sampled_from([[], [1, 2], ["a", "a"], ["dropout", "params"], [0.5, float("inf")]]),
    st.sampled_from([{}, {"x": 1}, {"class": 1}, {"a-b": 1}, {"k": float("nan")}, {"x": {}}]),
)
_KEYS = st.sampled_from(
    [
        "extra", "learning_rate", "loss", "skipped_steps", "class", "bad-name", "for", "k",
        "delta", "schedule", "fn", "source", "batch_norm", "rngs", "train_flag", "args",
        "val_fraction", "validation",
    ]
)  # fmt: skip


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    import copy

    doc = copy.deepcopy(draw(st.sampled_from([_RICH, _SMALL])))
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(doc_paths(doc)))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        target = parent[path[-1]] if path else doc
        action = draw(st.sampled_from(["alike", "alike", "set", "set", "delete", "add", "rename"]))
        if action == "alike" and path and isinstance(target, (bool, int, float, str)):
            # Another value of the same kind: the rules on numbers and names, within one type.
            kinds = ((bool, st.booleans()), (int, _INTS), (float, _FLOATS), (str, _STRINGS))
            alike = next(values for kind, values in kinds if isinstance(target, kind))
            parent[path[-1]] = draw(alike)
        elif action == "add" and isinstance(target, dict):
            target[draw(_KEYS)] = copy.deepcopy(draw(_VALUES))
        elif action == "rename" and path and isinstance(parent, dict):
            parent[draw(_KEYS)] = parent.pop(path[-1])
        elif action == "delete" and path and isinstance(parent, dict):
            del parent[path[-1]]
        elif path:
            parent[path[-1]] = copy.deepcopy(draw(_VALUES))
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_schema_verdict_equals_the_models_verdict(doc: dict[str, Any]) -> None:
    problems = _models_problems(doc)
    expressible = [p for p in problems if not _excluded(p, doc)]
    errors = [e.message for e in _validator().iter_errors(doc)]
    event("rejected" if expressible else "beyond JSON Schema only" if problems else "valid")
    assert bool(errors) == bool(expressible), (doc, [str(p) for p in problems], errors)


def test_both_documents_of_the_property_test_are_valid() -> None:
    for doc in (_RICH, _SMALL):
        assert _models_problems(doc) == []
        _validator().validate(doc)


# --- docs/spec.md's key reference is the models' descriptions --------------------------

SPEC_MD = ROOT / "docs" / "spec.md"
BEGIN, END = "<!-- BEGIN key reference (generated) -->\n", "<!-- END key reference -->\n"


def test_docs_key_reference_is_generated_from_the_models(update_goldens: bool) -> None:
    text = SPEC_MD.read_text()
    head, rest = text.split(BEGIN)
    written, tail = rest.split(END)
    expected = key_reference()
    if update_goldens and written != expected:
        SPEC_MD.write_text(head + BEGIN + expected + END + tail)
        return
    diff = "".join(
        difflib.unified_diff(
            written.splitlines(True), expected.splitlines(True), "docs/spec.md", "models"
        )
    )
    assert written == expected, (
        f"docs/spec.md's key reference is stale; run `pytest tests/test_schema.py "
        f"--update-goldens`:\n{diff}"
    )


def test_key_reference_describes_every_key_of_the_schema_in_the_same_words() -> None:
    reference = key_reference()
    schema = spec_json_schema()
    for node in [schema, *schema["$defs"].values()]:
        for key, value in node.get("properties", {}).items():
            assert f"| `{key}` |" in reference, key
            assert f"| {value['description']} |" in reference, key
