"""Structural validation with readable messages, driven by the pydantic models.

pydantic's own errors are precise but written for programmers: a union reports one error
per branch (`learning_rate.constrained-float`, `learning_rate.ScheduleSpec`), a discriminated
union names its tag, and the texts are pydantic's. So this module walks the plain
document alongside the models' type annotations (the models stay the single source of
truth for the shape of a spec) and says, per field, one thing a user can act on:
"expected a number, got 'high'", "unknown key 'lossses'" with "did you mean 'losses'?",
"must be at least 1, got 0". A union is judged by the shape of the value (a mapping goes
to the mapping branch) and reported once.

`tests/test_spec_errors.py` checks with hypothesis that this walk accepts exactly what
`Spec.model_validate` accepts; should they ever disagree, pydantic's verdict wins and its
errors are reported as they are (`check_structure` then validates with pydantic too).
"""

from __future__ import annotations

import keyword
import math
import re
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from beagle import catalog
from beagle.spec.loader import Locator
from beagle.spec.models import (
    BATCH_REFERENCE_PATTERN,
    IDENTIFIER_PATTERN,
    IMPORT_PATH_PATTERN,
    NAME_PATTERN,
    REFERENCE_PATTERN,
    ScheduleSpec,
    Spec,
)
from beagle.spec.problems import (
    PathTuple,
    Problem,
    abbreviates,
    choices_hint,
    closest,
    did_you_mean,
    plural,
)

__all__ = ["check_structure", "describe_type", "drop_null_mappings", "show_value"]


def show_value(value: Any) -> str:
    """A value as a user wrote it, short: `'high'`, `0`, `.inf`, `a mapping`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# What each string pattern of the models means, for messages and type descriptions.
_PATTERN_NOUNS = {
    IDENTIFIER_PATTERN: "a name",
    NAME_PATTERN: "a lower-case name",
    IMPORT_PATH_PATTERN: "an import path 'package.module:Attribute'",
    REFERENCE_PATTERN: "a reference ('outputs.<name>', 'batch.<key>' or 'params')",
    BATCH_REFERENCE_PATTERN: "a 'batch.<key>' reference",
}


def _pattern_problem(
    pattern: str, value: str, candidates: Sequence[str] = ()
) -> tuple[str, str | None]:
    """(message, hint) for a string that does not match one of the models' patterns."""
    shown = show_value(value)
    if pattern == IDENTIFIER_PATTERN:
        hint = _names_hint(value, candidates)
        return (
            f"{shown} is not a valid name: use ASCII letters, digits and '_', "
            "not starting with a digit",
            hint,
        )
    if pattern == NAME_PATTERN:
        lower = value.lower()
        hint = None
        if re.fullmatch(NAME_PATTERN, lower) and not keyword.iskeyword(lower):
            hint = f"did you mean '{lower}'?"
        return (
            f"{shown} is not a valid spec name: use lower-case ASCII letters, digits and '_', "
            "not starting with a digit",
            hint,
        )
    if pattern == IMPORT_PATH_PATTERN:
        hint = "write the module, a colon, then the attribute, as in 'mypackage.losses:my_loss'"
        if ":" not in value and re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", value, re.ASCII):
            module, _, attribute = value.rpartition(".")
            hint = f"did you mean '{module}:{attribute}'?"
        return f"{shown} is not an import path of the form 'package.module:Attribute'", hint
    if pattern in (REFERENCE_PATTERN, BATCH_REFERENCE_PATTERN):
        allowed = ("batch",) if pattern == BATCH_REFERENCE_PATTERN else ("outputs", "batch")
        hint = None
        head, dot, rest = value.partition(".")
        near = closest(head, allowed, n=1)
        if dot and near and re.fullmatch(r"[A-Za-z_]\w*", rest, re.ASCII):
            hint = f"did you mean '{near[0]}.{rest}'?"
        if pattern == BATCH_REFERENCE_PATTERN:
            return f"{shown} is not a batch reference: write 'batch.<key>'", hint
        return (
            f"{shown} is not a reference: write 'outputs.<name>', 'batch.<key>' or 'params'",
            hint,
        )
    return f"{shown} does not match the pattern {pattern}", None


def _names_hint(value: str, candidates: Sequence[str]) -> str | None:
    """Close valid names for a string that is not a name: by spelling, or the valid names
    written inside it (`adam(0.1)` -> `adam`); None when there are none to offer (the
    message says what a name is). The input itself, mangled, is never suggested."""
    if not candidates:
        return None
    near = closest(value, candidates)
    if not near:
        pool = set(candidates)
        words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", value)
        near = list(dict.fromkeys(word for word in words if word in pool))[:3]
    if not near:
        return None
    quoted = [f"'{name}'" for name in near]
    either = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"did you mean {either}?"


def _name_candidates(path: PathTuple) -> Sequence[str]:
    """The catalogue names valid at `path` (the optimizer, schedule, built-in fn), if any."""
    if path == ("optimizer", "name"):
        return sorted(catalog.OPTIMIZERS)
    if path == ("optimizer", "learning_rate", "schedule"):
        return sorted(catalog.SCHEDULES)
    if len(path) == 3 and path[0] in ("losses", "metrics") and path[2] == "fn":
        return sorted(catalog.LOSSES if path[0] == "losses" else catalog.METRICS)
    return ()


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _unwrap(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    """Strip `Annotated[...]` layers: (the bare type, every piece of metadata)."""
    meta: tuple[Any, ...] = ()
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp, meta = args[0], (*meta, *args[1:])
    expanded: list[Any] = []
    for item in meta:
        if isinstance(item, FieldInfo):
            expanded.extend(item.metadata)
            if item.discriminator is not None:
                expanded.append(_Discriminator(str(item.discriminator)))
        else:
            expanded.append(item)
    return tp, tuple(expanded)


class _Discriminator:
    def __init__(self, key: str) -> None:
        self.key = key


def _members(tp: Any) -> list[Any]:
    """The members of a union, nested unions flattened (Annotated members kept)."""
    out: list[Any] = []
    for member in get_args(tp):
        if _is_union(member):
            out.extend(_members(member))
        else:
            out.append(member)
    return out


def _pattern_of(meta: Sequence[Any]) -> str | None:
    for item in meta:
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            return pattern
    return None


def describe_type(tp: Any) -> str:
    """`an integer`, `a number`, `a name or an import path ...`: for "expected X" messages."""
    bare, meta = _unwrap(tp)
    if _is_union(bare):
        members = _members(bare)
        if set(members) == {int, float}:
            return "a number"
        words: list[str] = []
        numeric = [m for m in members if _unwrap(m)[0] in (int, float)]
        for member in members:
            if member in numeric and len(numeric) > 1:
                word = "a number"
            else:
                word = describe_type(member)
            if word not in words:
                words.append(word)
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    if bare is bool:
        return "true or false"
    if bare is int:
        return "an integer"
    if bare is float:
        return "a number"
    if bare is type(None):
        return "null"
    if bare is str:
        pattern = _pattern_of(meta)
        return _PATTERN_NOUNS.get(pattern, "a string") if pattern else "a string"
    if get_origin(bare) is Literal:
        return " or ".join(show_value(choice) for choice in get_args(bare))
    if get_origin(bare) is list:
        item = describe_type(get_args(bare)[0])
        for article in ("a ", "an "):
            if item.startswith(article) and " or " not in item and "(" not in item:
                return f"a list of {item[len(article) :]}s"
        return f"a list, each item {item}"
    if bare is ScheduleSpec:
        return "a schedule mapping ({schedule: <optax schedule>, ...})"
    if get_origin(bare) is dict or (isinstance(bare, type) and issubclass(bare, BaseModel)):
        return "a mapping"
    return "a value"


def _type_matches(bare: Any, value: Any) -> bool:
    """Whether `value`'s Python type is the one the bare type wants (strict, as pydantic's)."""
    if bare is Any or bare is object:
        return True
    if bare is bool:
        return isinstance(value, bool)
    if bare is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if bare is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if bare is str:
        return isinstance(value, str)
    if bare is type(None):
        return value is None
    if get_origin(bare) is list:
        return isinstance(value, list)
    if get_origin(bare) is dict or (isinstance(bare, type) and issubclass(bare, BaseModel)):
        return isinstance(value, dict)
    if get_origin(bare) is Literal:
        return any(type(value) is type(choice) for choice in get_args(bare))
    if _is_union(bare):
        return any(_type_matches(_unwrap(m)[0], value) for m in _members(bare))
    return False


class _Walker:
    """Checks plain data against a type annotation; returns problems, never raises."""

    def __init__(self, locator: Locator) -> None:
        self.locator = locator

    def problem(self, path: PathTuple, message: str, hint: str | None = None, **kw: Any) -> Problem:
        return self.locator.problem(path, message, hint, **kw)

    def check(
        self, value: Any, tp: Any, path: PathTuple, meta: tuple[Any, ...] = ()
    ) -> list[Problem]:
        bare, more = _unwrap(tp)
        meta = (*meta, *more)
        discriminator = next((m.key for m in meta if isinstance(m, _Discriminator)), None)
        if _is_union(bare):
            if discriminator is not None:
                problems = self.discriminated(value, _members(bare), discriminator, path)
            else:
                problems = self.union(value, _members(bare), path)
        elif isinstance(bare, type) and issubclass(bare, BaseModel):
            problems = self.model(value, bare, path)
        elif get_origin(bare) is Literal:
            problems = self.literal(value, get_args(bare), path)
        elif get_origin(bare) is dict:
            key_tp, value_tp = get_args(bare)
            problems = self.mapping(value, key_tp, value_tp, path)
        elif get_origin(bare) is list:
            problems = self.sequence(value, get_args(bare)[0], path)
        elif bare is Any or bare is object:
            problems = []
        elif not _type_matches(bare, value):
            return [self.problem(path, f"expected {describe_type(tp)}, got {show_value(value)}")]
        elif bare is float and not math.isfinite(value):
            return [self.problem(path, f"must be a finite number, got {show_value(value)}")]
        else:
            problems = []
        if problems:
            return problems
        return self.constraints(value, meta, path)

    def constraints(self, value: Any, meta: Sequence[Any], path: PathTuple) -> list[Problem]:
        if value is None:  # an optional field left null: its constraints do not apply
            return []
        shown = show_value(value)
        for item in meta:
            if isinstance(item, annotated_types.Ge) and value < item.ge:
                return [self.problem(path, f"must be at least {item.ge}, got {shown}")]
            if isinstance(item, annotated_types.Gt) and value <= item.gt:
                return [self.problem(path, f"must be greater than {item.gt}, got {shown}")]
            if isinstance(item, annotated_types.Le) and value > item.le:
                return [self.problem(path, f"must be at most {item.le}, got {shown}")]
            if isinstance(item, annotated_types.Lt) and value >= item.lt:
                return [self.problem(path, f"must be less than {item.lt}, got {shown}")]
            min_length = getattr(item, "min_length", None)
            if isinstance(min_length, int) and len(value) < min_length:
                if isinstance(value, dict):
                    return [self.problem(path, "needs at least one entry")]
                if isinstance(value, str):
                    return [self.problem(path, "must not be empty")]
                if min_length == 1:
                    return [self.problem(path, "needs at least one entry")]
                return [self.problem(path, f"needs at least {plural(min_length, 'item')}")]
            max_length = getattr(item, "max_length", None)
            if isinstance(max_length, int) and len(value) > max_length:
                return [
                    self.problem(
                        path,
                        f"{shown} is longer than {max_length} characters ({len(value)})",
                    )
                ]
            pattern = getattr(item, "pattern", None)
            if isinstance(pattern, str) and isinstance(value, str):
                if re.fullmatch(pattern, value) is None:
                    message, hint = _pattern_problem(pattern, value, _name_candidates(path))
                    return [self.problem(path, message, hint)]
            func: Callable[[Any], Any] | None = getattr(item, "func", None)
            if func is not None:
                try:
                    func(value)
                except (ValueError, AssertionError) as error:
                    if str(error) == f"{shown} is a Python keyword":  # the whole value
                        return [self.problem(path, str(error), f"did you mean '{value}_'?")]
                    return [self.problem(path, f"{shown}: {error}")]
        return []

    def model(self, value: Any, cls: type[BaseModel], path: PathTuple) -> list[Problem]:
        if not isinstance(value, dict):
            return [self.problem(path, f"expected a mapping, got {show_value(value)}")]
        fields = {(info.alias or name): info for name, info in cls.model_fields.items()}
        problems: list[Problem] = []
        unknown = [key for key in value if key not in fields]
        if cls.model_config.get("extra") != "allow":
            for key in unknown:
                problems.append(
                    self.problem(
                        (*path, key),
                        f"unknown key {show_value(key)}",
                        did_you_mean(key, fields, "valid keys"),
                        at="key",
                        shown_path=path,
                    )
                )
        for alias, info in fields.items():
            if alias in value:
                meta: tuple[Any, ...] = tuple(info.metadata)
                if info.discriminator is not None:
                    meta = (*meta, _Discriminator(str(info.discriminator)))
                problems.extend(self.check(value[alias], info.annotation, (*path, alias), meta))
            elif info.is_required():
                # A misspelt key is already reported with this name as its hint.
                if any(alias in closest(key, fields) or abbreviates(key, alias) for key in unknown):
                    continue
                problems.append(self.problem(path, f"missing required key '{alias}'", at="key"))
        return problems

    def discriminated(
        self, value: Any, members: list[Any], key: str, path: PathTuple
    ) -> list[Problem]:
        if not isinstance(value, dict):
            return [self.problem(path, f"expected a mapping, got {show_value(value)}")]
        by_tag: dict[str, type[BaseModel]] = {}
        for member in members:
            cls = _unwrap(member)[0]
            for tag in get_args(cls.model_fields[key].annotation):
                by_tag[str(tag)] = cls
        noun = f"{path[-1]} {key}s" if path else f"{key}s"
        if key not in value:
            return [
                self.problem(
                    path, f"missing required key '{key}'", choices_hint(by_tag, noun), at="key"
                )
            ]
        tag = value[key]
        if not isinstance(tag, str) or tag not in by_tag:
            return [
                self.problem(
                    (*path, key),
                    f"unknown {f'{path[-1]} ' if path else ''}{key} {show_value(tag)}",
                    did_you_mean(str(tag), by_tag, noun),
                )
            ]
        problems = self.model(value, by_tag[tag], path)
        # A key that belongs to another variant: say which one.
        fixed = []
        for problem in problems:
            if problem.message.startswith("unknown key "):
                name = problem.message[len("unknown key ") :].strip("'")
                owners = sorted(t for t, c in by_tag.items() if name in c.model_fields)
                if owners and not closest(name, by_tag[tag].model_fields):
                    problem = Problem(
                        problem.file,
                        problem.line,
                        problem.column,
                        problem.path,
                        f"{problem.message} for {key} '{tag}'",
                        f"'{name}' belongs to {key} " + " or ".join(f"'{o}'" for o in owners),
                    )
            fixed.append(problem)
        return fixed

    def union(self, value: Any, members: list[Any], path: PathTuple) -> list[Problem]:
        if value is None and type(None) in members:
            return []
        same_type = [m for m in members if _type_matches(_unwrap(m)[0], value)]
        results = [self.check(value, member, path) for member in same_type]
        if any(not problems for problems in results):
            return []
        if len(results) == 1 and not (
            len(same_type) < len(members) and get_origin(_unwrap(same_type[0])[0]) is Literal
        ):
            return results[0]
        expected = describe_type(Union[tuple(members)])  # type: ignore[valid-type]  # noqa: UP007
        # A string that is none of a literal's words, where a number would do too ('fast'
        # for `'auto' or an integer`): say both; keep the hint only if it is a close match.
        hint = next((p.hint for problems in results for p in problems if p.hint), None)
        if len(results) == 1 and hint is not None and not hint.startswith("did you mean"):
            hint = None
        if results and isinstance(value, (int, float)) and not isinstance(value, bool):
            # A number of the right kind out of range: the range is the useful message.
            return results[0]
        return [self.problem(path, f"expected {expected}, got {show_value(value)}", hint)]

    def literal(self, value: Any, choices: tuple[Any, ...], path: PathTuple) -> list[Problem]:
        if any(value == c and type(value) is type(c) for c in choices):
            return []
        if path == ("version",):
            supported = ", ".join(show_value(c) for c in choices)
            return [
                self.problem(
                    path,
                    f"unsupported version {show_value(value)}",
                    f"supported versions: {supported}",
                )
            ]
        words = [str(c) for c in choices]
        hint = did_you_mean(str(value), words) if isinstance(value, str) else None
        expected = " or ".join(show_value(c) for c in choices)
        return [self.problem(path, f"expected {expected}, got {show_value(value)}", hint)]

    def mapping(self, value: Any, key_tp: Any, value_tp: Any, path: PathTuple) -> list[Problem]:
        if not isinstance(value, dict):
            return [self.problem(path, f"expected a mapping, got {show_value(value)}")]
        problems: list[Problem] = []
        for key, item in value.items():
            for problem in self.check(key, key_tp, (*path, key)):
                problems.append(
                    self.locator.problem((*path, key), problem.message, problem.hint, at="key")
                )
            problems.extend(self.check(item, value_tp, (*path, key)))
        return problems

    def sequence(self, value: Any, item_tp: Any, path: PathTuple) -> list[Problem]:
        if not isinstance(value, list):
            return [self.problem(path, f"expected a list, got {show_value(value)}")]
        problems: list[Problem] = []
        for index, item in enumerate(value):
            problems.extend(self.check(item, item_tp, (*path, index)))
        return problems


def _is_mapping_type(tp: Any) -> bool:
    bare = _unwrap(tp)[0]
    return get_origin(bare) is dict or (isinstance(bare, type) and issubclass(bare, BaseModel))


def drop_null_mappings(data: Any, cls: type[BaseModel] = Spec) -> None:
    """Remove, in place, each optional mapping written empty (`metrics:` with only comments
    below it, `--set metrics=null`): a null there means "none", as if the key were absent.

    Optional sections that are `None` by default (`validation`, `checkpoint`, `log`, ...)
    already read null as absent; this gives the same meaning to the optional mappings whose
    default is empty (`metrics`, `model.args`, `optimizer.args`, a term's `args`).
    """
    if not isinstance(data, dict):
        return
    for name, info in cls.model_fields.items():
        alias = info.alias or name
        if alias not in data:
            continue
        value = data[alias]
        bare = _unwrap(info.annotation)[0]
        if value is None and not info.is_required() and _is_mapping_type(bare):
            del data[alias]
            continue
        for member in _members(bare) if _is_union(bare) else [bare]:
            member = _unwrap(member)[0]
            if isinstance(member, type) and issubclass(member, BaseModel):
                if "source" not in member.model_fields:  # data sources have no mappings
                    drop_null_mappings(value, member)
            elif get_origin(member) is dict and isinstance(value, dict):
                entry = _unwrap(get_args(member)[1])[0]
                if isinstance(entry, type) and issubclass(entry, BaseModel):
                    for item in value.values():
                        drop_null_mappings(item, entry)


def check_structure(data: Any, locator: Locator) -> tuple[Spec | None, list[Problem]]:
    """Validate plain data as a `Spec`: the model, or every structural problem."""
    problems = _Walker(locator).model(data, Spec, ())
    if problems:
        return None, problems
    try:
        return Spec.model_validate(data), []
    except ValidationError as error:  # the walk and pydantic disagree: pydantic wins
        return None, [
            locator.problem(
                tuple(part for part in item["loc"] if isinstance(part, (str, int))),
                item["msg"],
            )
            for item in error.errors()
        ]
