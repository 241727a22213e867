"""`--set KEY=VALUE` overrides: a dotted path into the spec and a YAML 1.2 value.

Each override is applied, in order, to the loaded round-trip document before validation,
so the result is validated exactly like the file (and `LoadedSpec.text`, the spec as run,
is that document dumped again with the user's comments kept). VALUE is parsed as YAML 1.2:
`3e-4` is a number, `[32, 32]` a list, `null` a null, `'3'` a string.

A path into a section the file leaves out creates it (`--set checkpoint.every=2`); a path
the spec language does not have is an error naming the closest valid paths. Problems in
an overridden value point at the override, not at the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from beagle.spec.loader import Locator, parse_yaml
from beagle.spec.models import Spec
from beagle.spec.problems import (
    PathTuple,
    Problem,
    abbreviates,
    closest,
    format_path,
    plural,
)
from beagle.spec.validate import _is_union, _members, _unwrap, show_value

__all__ = ["apply_overrides", "parse_override", "valid_paths"]

_ANY = object()  # a free-form mapping (`model.args`): any key below is allowed
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


class OverrideError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _origin(arg: str) -> str:
    return f"--set {arg}"


def parse_override(arg: str) -> tuple[PathTuple, Any]:
    """`a.b.c=VALUE` -> (("a", "b", "c"), the YAML 1.2 value); raises OverrideError."""
    key, eq, text = arg.partition("=")
    key = key.strip()
    if not eq or not key:
        raise OverrideError(
            Problem(
                _origin(arg),
                None,
                None,
                "",
                "expected KEY=VALUE",
                "for example --set optimizer.learning_rate=3e-4",
            )
        )
    segments = key.split(".")
    if any(_SEGMENT.fullmatch(s) is None for s in segments):
        raise OverrideError(
            Problem(
                _origin(arg),
                None,
                None,
                "",
                f"{show_value(key)} is not a dotted path of keys",
                "for example train.epochs or losses.ce.weight",
            )
        )
    path: PathTuple = tuple(int(s) if s.isdigit() else s for s in segments)
    parsed = parse_yaml(text, _origin(arg))
    if parsed.problems:
        first = parsed.problems[0]
        raise OverrideError(
            Problem(_origin(arg), None, None, format_path(path), first.message, first.hint)
        )
    return path, parsed.data


def _model_of(tp: Any, value: Any) -> Any:
    """For a discriminated union, the member the value's tag selects (else the union)."""
    bare, meta = _unwrap(tp)
    if _is_union(bare) and isinstance(value, dict):
        for member in _members(bare):
            cls = _unwrap(member)[0]
            if (
                isinstance(cls, type)
                and issubclass(cls, BaseModel)
                and "source" in cls.model_fields
            ):
                tags = get_args(cls.model_fields["source"].annotation)
                if value.get("source") in tags:
                    return cls
    return tp


def _child(tp: Any, value: Any, segment: str | int) -> Any:
    """The type at `segment` below a field of type `tp` (None: no such key)."""
    if tp is _ANY:
        return _ANY
    bare, _ = _unwrap(_model_of(tp, value))
    if _is_union(bare):
        found = [c for m in _members(bare) if (c := _child(m, value, segment)) is not None]
        return found[0] if found else None
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        for name, info in bare.model_fields.items():
            if (info.alias or name) == segment:
                return info.annotation
        return (
            _ANY if bare.model_config.get("extra") == "allow" and isinstance(segment, str) else None
        )
    if get_origin(bare) is dict:
        return get_args(bare)[1] if isinstance(segment, str) else None
    if get_origin(bare) is list:
        return get_args(bare)[0] if isinstance(segment, int) else None
    if bare is object or bare is Any:
        return _ANY
    return None


def _child_names(tp: Any, value: Any) -> list[str]:
    if tp is _ANY:
        return sorted(value) if isinstance(value, dict) else []
    bare, _ = _unwrap(_model_of(tp, value))
    names: list[str] = []
    if _is_union(bare):
        for member in _members(bare):
            names.extend(n for n in _child_names(member, value) if n not in names)
        return names
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        names = [info.alias or name for name, info in bare.model_fields.items()]
        if isinstance(value, dict):
            names.extend(k for k in value if k not in names)
        return names
    if get_origin(bare) is dict or bare is object:
        return [str(k) for k in value] if isinstance(value, dict) else []
    return []


def valid_paths(doc: Any, tp: Any = Spec, prefix: str = "", depth: int = 4) -> list[str]:
    """Every dotted path the spec language has below `tp`, with the document's own names."""
    if depth == 0:
        return []
    out: list[str] = []
    for name in _child_names(tp, doc):
        path = f"{prefix}.{name}" if prefix else name
        out.append(path)
        child_value = doc.get(name) if isinstance(doc, dict) else None
        child_tp = _child(tp, doc, name)
        if child_tp is not None:
            out.extend(valid_paths(child_value, child_tp, path, depth - 1))
    return out


def _unknown_path_problem(
    arg: str, doc: Any, path: PathTuple, depth: int, tp: Any, node: Any
) -> Problem:
    wanted = ".".join(str(p) for p in path)
    parent = ".".join(str(p) for p in path[:depth])
    rest = "".join(f".{p}" for p in path[depth + 1 :])
    near: list[str] = [
        f"{parent}.{n}{rest}" if parent else f"{n}{rest}"
        for n in closest(str(path[depth]), _child_names(tp, node))
        or [c for c in _child_names(tp, node) if abbreviates(str(path[depth]), c)]
    ]
    if not near and depth == 0:
        near = closest(wanted, valid_paths(doc, depth=len(path) + 1))
    hint: str | None = None
    if near:
        hint = "did you mean " + " or ".join(f"'{n}'" for n in near) + "?"
    else:
        names = _child_names(tp, node)
        where = f"under '{parent}'" if parent else "at the top"
        hint = f"valid keys {where}: " + ", ".join(f"'{n}'" for n in names) if names else None
    return Problem(
        _origin(arg),
        None,
        None,
        wanted,
        f"unknown key '{path[depth]}'" + (f" in '{parent}'" if parent else ""),
        hint,
    )


def _apply(doc: CommentedMap, arg: str, path: PathTuple, value: Any, locator: Locator) -> None:
    node: Any = doc
    tp: Any = Spec
    created_at: PathTuple | None = None
    for depth, segment in enumerate(path):
        child_tp = _child(tp, node, segment)
        if child_tp is None:
            raise OverrideError(_unknown_path_problem(arg, doc, path, depth, tp, node))
        last = depth == len(path) - 1
        if isinstance(node, list):
            assert isinstance(segment, int)
            if segment >= len(node):
                raise OverrideError(
                    Problem(
                        _origin(arg),
                        None,
                        None,
                        format_path(path),
                        f"index {segment} is out of range: "
                        f"{format_path(path[:depth])} has {plural(len(node), 'item')}",
                    )
                )
        if last:
            node[segment] = value
            locator.mark_override(created_at or path, arg)
            return
        child = node.get(segment) if isinstance(node, dict) else node[segment]
        if child is None:
            child = CommentedMap()
            node[segment] = child
            if created_at is None:
                created_at = path[: depth + 1]
        elif not isinstance(child, (dict, list)):
            here = format_path(path[: depth + 1])
            raise OverrideError(
                Problem(
                    _origin(arg),
                    None,
                    None,
                    format_path(path),
                    f"'{here}' is {show_value(child)}, not a mapping",
                    f"set '{here}' as a whole, e.g. --set '{here}={{...}}'",
                )
            )
        node, tp = child, child_tp


def apply_overrides(doc: Any, overrides: Sequence[str], locator: Locator) -> list[Problem]:
    """Apply `KEY=VALUE` overrides in order to a round-trip document; problems for the rest."""
    problems: list[Problem] = []
    for arg in overrides:
        try:
            path, value = parse_override(arg)
            if not isinstance(doc, CommentedMap):
                continue
            if isinstance(value, (dict, list)) and not isinstance(
                value, (CommentedMap, CommentedSeq)
            ):
                value = CommentedMap(value) if isinstance(value, dict) else CommentedSeq(value)
            _apply(doc, arg, path, value, locator)
        except OverrideError as error:
            problems.append(error.problem)
    return problems
