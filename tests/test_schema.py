"""The JSON Schema of the spec validates every example spec and rejects malformed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from beagle.spec import SpecError, load_spec, spec_json_schema

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
