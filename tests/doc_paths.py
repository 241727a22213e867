"""The paths into a loaded YAML document, for property tests that mutate one place."""

from __future__ import annotations

from typing import Any


def doc_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path of `doc` (mapping keys and list indexes), the root's `()` first."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.extend(doc_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out.extend(doc_paths(value, (*prefix, index)))
    return out
