"""The JSON Schema of the spec validates every example spec and rejects malformed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from beagle.spec import spec_json_schema

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
