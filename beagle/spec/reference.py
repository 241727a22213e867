"""`key_reference()`: the "Key reference" section of docs/spec.md, rendered from the models.

Every key of the spec with its type, range, default and description, taken from the
pydantic models' `Field(description=...)`: the same words the JSON Schema carries
(`beagle.spec.schema`). A test compares docs/spec.md with this text;
`pytest tests/test_schema.py --update-goldens` rewrites that section.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from beagle.spec.models import Spec
from beagle.spec.validate import describe_type

__all__ = ["key_reference"]


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"`{value}`" if value != {} and value != [] else f"`{value!r}`"


def _sections(cls: type[BaseModel], heading: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """(heading, model) for `cls` and every section below it, depth first in field order."""
    yield heading, cls
    for name, info in cls.model_fields.items():
        key = info.alias or name
        below = f"{heading}.{key}" if heading != "(top level)" else key
        for tp in _models_in(info.annotation):
            if tp.__name__.endswith("Data"):
                source = get_args(tp.model_fields["source"].annotation)[0]
                yield from _sections(tp, f"{below}` with `source: {source}")
            elif get_origin(_bare(info.annotation)) is dict:
                yield from _sections(tp, f"{below}.<name>")
            else:
                yield from _sections(tp, below)


def _bare(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _models_in(tp: Any) -> list[type[BaseModel]]:
    tp = _bare(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in get_args(tp) for m in _models_in(arg)]


def _constraints(tp: Any) -> Iterator[Any]:
    """The range and length constraints anywhere in an annotation."""
    if get_origin(tp) is Annotated:
        for item in get_args(tp)[1:]:
            yield from item.metadata if isinstance(item, FieldInfo) else (item,)
        yield from _constraints(get_args(tp)[0])
    else:
        for arg in get_args(tp):
            yield from _constraints(arg)


def _range_text(info: FieldInfo) -> str:
    words = []
    for item in (*info.metadata, *_constraints(info.annotation)):
        if isinstance(item, annotated_types.Ge):
            words.append(f"at least {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"above {item.gt}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"below {item.lt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"at most {item.le}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            words.append("not empty")
    return "".join(f", {word}" for word in dict.fromkeys(words))


def key_reference() -> str:
    """The "Key reference" of docs/spec.md: every key, its type, default and description,
    from the models (the same descriptions the JSON Schema carries)."""
    lines: list[str] = []
    for heading, cls in _sections(Spec, "(top level)"):
        lines += ["", f"#### `{heading}`" if heading != "(top level)" else "#### Top level"]
        lines += ["", (cls.__doc__ or "").strip().splitlines()[0], ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, info in cls.model_fields.items():
            annotation = (
                Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            )
            kind = (describe_type(annotation) + _range_text(info)).replace("|", "\\|")
            lines.append(
                f"| `{info.alias or name}` | {kind} | {_default_text(info)} | {info.description} |"
            )
    return "\n".join(lines[1:]) + "\n"
