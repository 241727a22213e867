"""`spec_json_schema()`: the JSON Schema of a spec, for editors (`beagle schema` prints it).

It is generated from the pydantic models, so it has the same keys, types, defaults and
ranges; checks that relate fields to each other (`beagle.spec.semantics`) and import
paths are beyond a JSON Schema and are left to `beagle check`.
"""

from __future__ import annotations

from typing import Any

from beagle.spec.models import Spec

__all__ = ["SCHEMA_ID", "spec_json_schema"]

SCHEMA_ID = "https://beagle.dev/schemas/spec-v1.json"


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-1 spec file."""
    schema = Spec.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "beagle training spec, version 1",
    }
