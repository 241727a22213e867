"""`spec_json_schema()`: the JSON Schema of a spec, for editors (`beagle schema` prints it).

It is generated from the pydantic models (keys, types, defaults, ranges and every key's
description, from the models' `Field(description=...)`), made as strict as the front end
wherever JSON Schema can say it:

- names are identifiers that are not Python keywords, mapping keys included
  (`propertyNames`); import paths have no keyword part;
- numbers are finite: `maximum`/`minimum` at the largest float reject `.inf`, and a
  `not` of an impossible range rejects `.nan` (every comparison with NaN is false, so NaN
  alone satisfies `minimum: 1` and `maximum: 0` at once);
- built-in names come from `beagle.catalog`: `fn` is a built-in loss or metric or an
  import path, `optimizer.name` an optax optimizer, `schedule` an optax schedule; a
  built-in's `args` are its own, the required ones present, references where a reference
  is wanted;
- the single-field rules of `beagle.spec.semantics`: reserved loss and metric names, no
  `learning_rate` in `optimizer.args`, RNG streams named once and never `params`, output
  names distinct, a `train_flag` with `batch_norm` or `rngs`, finite `model.args`;
- an optional mapping written empty (`metrics:` with only comments) may be null, as the
  loader reads it.

Beyond it, and left to `beagle check`: rules that relate one section to another (a
reference to a declared output or a source's batch key, a history key, a metric named like
a loss, what the `python` and `npz` sources require), distinct values of an `outputs`
mapping, whether an import path can be imported, and the difference between `1` and `1.0`
(JSON has one kind of number, so `epochs: 1.0` passes the schema).
"""

from __future__ import annotations

import copy
import keyword
import sys
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from beagle import catalog
from beagle.spec import models
from beagle.spec.models import IMPORT_PATH_PATTERN, Spec

__all__ = ["SCHEMA_ID", "spec_json_schema"]

SCHEMA_ID = "https://beagle.dev/schemas/spec-v1.json"

_LARGEST = sys.float_info.max
_FINITE: dict[str, Any] = {
    "minimum": -_LARGEST,
    "maximum": _LARGEST,
    "not": {"minimum": 1, "maximum": 0},  # only NaN is both >= 1 and <= 0
}
# A keyword as one part of a dotted or colon-separated import path.
_KEYWORD_PART = "(^|[.:])(" + "|".join(keyword.kwlist) + ")([.:]|$)"

_KEYWORDS = {"enum": list(keyword.kwlist)}  # becomes one `$defs` entry, PythonKeyword


def _literal_schema(literal: catalog.LiteralArg) -> dict[str, Any]:
    """A built-in's literal argument (`catalog.LITERAL_ARGS`), as JSON Schema."""
    if literal.integer:
        return {"type": "integer", "minimum": 1}
    return {"type": "number", "exclusiveMinimum": 0, **_FINITE}


class _SpecJsonSchema(GenerateJsonSchema):
    """pydantic's generator, with the rules of the models' validators that it leaves out."""

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        # Every model forbids .inf and .nan (`allow_inf_nan=False`).
        json_schema = super().float_schema(schema)
        return {**_FINITE, **json_schema}

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        json_schema = super().function_after_schema(schema)
        if schema["function"]["function"] is models._not_keyword:
            json_schema = dict(json_schema)
            if json_schema.get("pattern") == IMPORT_PATH_PATTERN:
                json_schema["not"] = {"pattern": _KEYWORD_PART}
            else:
                json_schema["not"] = _KEYWORDS
        return json_schema

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        # The keys' whole schema as `propertyNames` (pydantic's `patternProperties` would
        # let a key that is not a name through, unchecked).
        keys = dict(self.generate_inner(schema["keys_schema"])) if "keys_schema" in schema else {}
        values = dict(self.generate_inner(schema["values_schema"]))
        for noise in ("type", "title"):
            keys.pop(noise, None)
        values.pop("title", None)
        json_schema: dict[str, Any] = {"type": "object", "additionalProperties": values or True}
        if keys:
            json_schema["propertyNames"] = keys
        self.update_with_validations(json_schema, schema, self.ValidationsMapping.object)
        return json_schema


def _fix_union_bounds(node: Any) -> None:
    """pydantic writes a range on a union (`Annotated[int | float, Field(gt=0)]`) as `gt`,
    which JSON Schema ignores; rename it to the keyword that applies to any number."""
    names = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}
    if isinstance(node, dict):
        for old, new in names.items():
            if old in node and "anyOf" in node:
                node[new] = node.pop(old)
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for item in value.values():
                    _fix_union_bounds(item)
            else:
                _fix_union_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _fix_union_bounds(item)


def _share_keywords(node: Any) -> None:
    """Point every `not: <the keyword list>` at one `$defs` entry (pydantic cannot)."""
    if isinstance(node, dict):
        if node.get("not") == _KEYWORDS:
            node["not"] = {"$ref": "#/$defs/PythonKeyword"}
        for value in node.values():
            _share_keywords(value)
    elif isinstance(node, list):
        for item in node:
            _share_keywords(item)


def _model_defs(cls: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """`cls` and every model reachable from its fields (each a `$defs` entry by its name)."""
    seen: list[type[BaseModel]] = []

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in seen:
                return
            seen.append(tp)
            for info in tp.model_fields.values():
                visit(info.annotation)
        for arg in getattr(tp, "__args__", ()):
            visit(arg)
        for arg in getattr(tp, "__metadata__", ()):
            visit(arg)
        origin = getattr(tp, "__origin__", None)
        if origin is not None:
            visit(origin)

    visit(cls)
    yield from seen


def _allow_null_mappings(schema: dict[str, Any]) -> None:
    """An optional mapping field may be null: the loader reads `metrics:` with nothing
    below it as no metrics (`validate.drop_null_mappings`)."""
    for cls in _model_defs(Spec):
        node = schema if cls is Spec else schema["$defs"][cls.__name__]
        for name, info in cls.model_fields.items():
            if info.default_factory is not dict:
                continue
            prop = node["properties"][info.alias or name]
            description, default = prop.pop("description"), prop.pop("default", None)
            node["properties"][info.alias or name] = {
                "anyOf": [prop, {"type": "null"}],
                "default": default,
                "description": description,
            }


def _mapping_branch(prop: dict[str, Any]) -> dict[str, Any]:
    """The object schema inside a property that may also be null."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "object":
            return dict(branch)
    raise KeyError("no mapping branch")


def _builtin_rules(
    table: dict[str, catalog.Builtin], kind: str, args: dict[str, Any]
) -> list[dict[str, Any]]:
    """`if fn is <built-in> then args are its own`: one rule per built-in."""
    reference = next(b for b in args["additionalProperties"]["anyOf"] if b.get("type") == "string")
    rules = []
    for builtin in sorted(table.values(), key=lambda b: b.name):
        then_args: dict[str, Any] = {
            "type": "object",
            "description": f"The arguments of '{builtin.name}': " + ", ".join(builtin.params) + ".",
            "propertyNames": {"enum": list(builtin.params)},
            "properties": {
                param: {
                    **(
                        _literal_schema(catalog.LITERAL_ARGS[param])
                        if param in catalog.LITERAL_ARGS
                        else reference
                    ),
                    "description": f"Argument '{param}' of the built-in {kind} "
                    f"'{builtin.name}'"
                    + (
                        f": {catalog.LITERAL_ARGS[param].words}."
                        if param in catalog.LITERAL_ARGS
                        else ": a reference."
                    ),
                }
                for param in builtin.params
            },
        }
        then: dict[str, Any] = {"properties": {"args": then_args}}
        if builtin.required:
            then_args["required"] = list(builtin.required)
            then["required"] = ["args"]
        rules.append(
            {
                "if": {"properties": {"fn": {"const": builtin.name}}, "required": ["fn"]},
                "then": then,
            }
        )
    return rules


def _tighten(schema: dict[str, Any]) -> None:
    """The rules of `beagle.catalog` and `beagle.spec.semantics` that JSON Schema can say."""
    defs = schema["$defs"]
    import_path = defs["ModelSpec"]["properties"]["class"]
    import_path = {k: v for k, v in import_path.items() if k not in ("title", "description")}

    for def_name, kind, table in (
        ("LossSpec", "loss", catalog.LOSSES),
        ("MetricSpec", "metric", catalog.METRICS),
    ):
        node = defs[def_name]
        fn = node["properties"]["fn"]
        node["properties"]["fn"] = {
            "anyOf": [{"type": "string", "enum": sorted(table)}, import_path],
            "description": fn["description"],
        }
        node["allOf"] = _builtin_rules(table, kind, _mapping_branch(node["properties"]["args"]))

    optimizer = defs["OptimizerSpec"]["properties"]
    optimizer["name"] = {
        "type": "string",
        "enum": sorted(catalog.OPTIMIZERS),
        "description": optimizer["name"]["description"],
    }
    args = optimizer["args"]["anyOf"][0]
    args["propertyNames"] = {"allOf": [args["propertyNames"], {"not": {"const": "learning_rate"}}]}

    schedule = defs["ScheduleSpec"]
    identifier = {k: v for k, v in schedule["properties"]["schedule"].items() if k != "title"}
    identifier.pop("description", None)
    schedule["properties"]["schedule"] = {
        "type": "string",
        "enum": sorted(catalog.SCHEDULES),
        "description": schedule["properties"]["schedule"]["description"],
    }
    schedule["propertyNames"] = identifier
    schedule["additionalProperties"] = {"type": "number", **_FINITE}

    model = defs["ModelSpec"]
    rngs = model["properties"]["rngs"]
    rngs["uniqueItems"] = True
    rngs["items"] = {"allOf": [rngs["items"], {"not": {"const": "params"}}]}
    for branch in model["properties"]["outputs"]["anyOf"]:
        if branch.get("type") == "array":
            branch["uniqueItems"] = True
    model_args = _mapping_branch(model["properties"]["args"])
    model_args["additionalProperties"] = {"$ref": "#/$defs/FiniteValue"}
    model["properties"]["args"]["anyOf"][0] = model_args
    model["allOf"] = [
        {
            "if": {
                "anyOf": [
                    {"properties": {"batch_norm": {"const": True}}, "required": ["batch_norm"]},
                    {"properties": {"rngs": {"minItems": 1}}, "required": ["rngs"]},
                ]
            },
            "then": {
                "properties": {
                    "train_flag": {
                        "type": "string",
                        "description": "With batch_norm or rngs, a train_flag is required.",
                    }
                }
            },
        }
    ]
    defs["FiniteValue"] = {
        "description": "A value with no .inf or .nan in it, at any depth.",
        "anyOf": [
            {"not": {"type": ["number", "array", "object"]}},
            {"type": "number", **_FINITE},
            {"type": "array", "items": {"$ref": "#/$defs/FiniteValue"}},
            {"type": "object", "additionalProperties": {"$ref": "#/$defs/FiniteValue"}},
        ],
    }

    properties = schema["properties"]
    losses = properties["losses"]
    names = losses["propertyNames"]
    reserved = sorted(catalog.RESERVED_METRIC_NAMES)
    losses["propertyNames"] = {"allOf": [names, {"not": {"const": "skipped_steps"}}]}
    losses["if"] = {"minProperties": 2}
    losses["then"] = {"propertyNames": {"not": {"const": "loss"}}}
    metrics = properties["metrics"]["anyOf"][0]
    metrics["propertyNames"] = {"allOf": [metrics["propertyNames"], {"not": {"enum": reserved}}]}


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-1 spec file."""
    schema = Spec.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_SpecJsonSchema
    )
    schema = copy.deepcopy(schema)
    _fix_union_bounds(schema)
    _allow_null_mappings(schema)
    _tighten(schema)
    _share_keywords(schema)
    schema["$defs"]["PythonKeyword"] = {
        "description": "A Python keyword: never a name in a spec.",
        **_KEYWORDS,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "beagle training spec, version 1",
    }
