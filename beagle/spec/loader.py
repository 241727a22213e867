"""Load a spec's YAML text with the source position of every key and value.

Why ruamel.yaml and not PyYAML: PyYAML implements YAML 1.1, whose resolver reads `1e-3`
as the *string* "1e-3" (a 1.1 float needs a dot: `1.0e-3`), `yes`/`no`/`on`/`off` as
booleans and `010` as octal; it keeps no positions once the document is constructed, and
it silently lets a later duplicate key win. Each would need a custom loader. ruamel.yaml's
round-trip mode gives all three: YAML 1.2 scalars (`1e-3` is a float), line and column of
every key, value and item (`CommentedMap.lc`), and duplicate-key detection; and it can
dump the document again with the user's comments kept, which is how `LoadedSpec.text` (the
spec as run, overrides applied) is written.

The loader turns the round-trip document into plain Python data (dict, list, str, int,
float, bool, None) plus a `Positions` table from each field's path to where it was written.
Nothing here knows what a valid spec looks like: that is `beagle.spec.validate`'s job.
"""

from __future__ import annotations

import datetime
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver, implicit_resolvers
from ruamel.yaml.util import RegExp

from beagle.spec.problems import PathTuple, Problem, format_path

__all__ = [
    "Locator",
    "ParsedDocument",
    "Position",
    "dump_yaml",
    "load_yaml_text",
    "make_yaml",
    "parse_yaml",
    "to_plain",
]

_STR_TAG = "tag:yaml.org,2002:str"

MAX_VALUES = 10_000
"""The most values (mappings, lists, keys and scalars) a document may hold once its
aliases are expanded: a spec has a few hundred; a "billion laughs" file has billions."""

MAX_DEPTH = 100
"""The deepest nesting of mappings and lists a document may have."""


# YAML 1.2's core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution): no digit
# separators (`1_0`) and no binary (`0b11`); those are strings, as in YAML 1.2 itself.
# ruamel.yaml's 1.2 rules still accept both from YAML 1.1.
_CORE_INT = RegExp(
    r"""^(?:[-+]?[0-9]+
    |[-+]?0o[0-7]+
    |[-+]?0x[0-9a-fA-F]+)$""",
    re.X,
)
_CORE_FLOAT = RegExp(
    r"""^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+[eE][-+]?[0-9]+
    |[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_CORE_RESOLVERS = {"tag:yaml.org,2002:int": _CORE_INT, "tag:yaml.org,2002:float": _CORE_FLOAT}


class _CoreResolver(VersionedResolver):  # type: ignore[misc]
    """ruamel's resolver with YAML 1.2's core-schema numbers (a %YAML 1.1 file keeps 1.1)."""

    @property
    def versioned_resolver(self) -> Any:
        version = self.processing_version
        if isinstance(version, str):
            version = tuple(map(int, version.split(".")))
        if version not in self._version_implicit_resolver:
            for versions, tag, regexp, first in implicit_resolvers:
                if version in versions:
                    if version == (1, 2):
                        regexp = _CORE_RESOLVERS.get(tag, regexp)
                    self.add_version_implicit_resolver(version, tag, regexp, first)
        return self._version_implicit_resolver[version]


class SpecLimitError(MarkedYAMLError):
    """Valid YAML that no spec can be: a recursive alias, too many values, too deep."""


class _GuardedComposer(Composer):  # type: ignore[misc]
    """ruamel's composer, refusing recursive aliases and documents that expand too far.

    Every alias stands for a full copy of its anchor's value once the document is turned
    into plain data, so the values are counted as they would be after expansion; an alias
    to a node still being composed (`a: &x [*x]`) would expand forever.
    """

    def compose_document(self) -> Any:
        self._values = 0  # values so far, aliases expanded
        self._sizes: dict[int, int] = {}  # id(node) -> its values, aliases expanded
        self._open: list[str] = []  # anchors of the nodes being composed
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                raise SpecLimitError(
                    None,
                    None,
                    f"recursive alias '*{event.anchor}': it is inside its own anchor "
                    f"'&{event.anchor}'",
                    event.start_mark,
                )
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1), event.start_mark)
            return node
        if self.depth >= MAX_DEPTH:
            raise SpecLimitError(
                None,
                None,
                f"the document is nested more than {MAX_DEPTH} levels deep",
                event.start_mark,
            )
        before = self._values
        self._count(1, event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self._open.append(anchor)
        node = super().compose_node(parent, index)
        if anchor is not None:
            self._open.pop()
        self._sizes[id(node)] = self._values - before
        return node

    def _count(self, values: int, mark: Any) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise SpecLimitError(
                None,
                None,
                f"the document holds more than {MAX_VALUES} values once its aliases are expanded",
                mark,
            )


@dataclass(frozen=True)
class Position:
    """Where a field was written: 1-based (line, column) of its key and of its value."""

    key: tuple[int, int] | None  # None for the document itself, a list item, a merged key
    value: tuple[int, int] | None
    collection: bool = False  # the value is a mapping or a list
    override: str | None = None  # the `KEY=VALUE` of the `--set` that wrote it, if one did


class Locator:
    """Turns a field's path into a `Problem` that points at its key or value.

    A path that was not written (a missing key, a default) points at its nearest written
    parent's key, which is where the user has to add it.
    """

    def __init__(self, file: str, positions: dict[PathTuple, Position] | None = None) -> None:
        self.file = file
        self.positions: dict[PathTuple, Position] = dict(positions or {})

    def problem(
        self,
        path: Sequence[str | int],
        message: str,
        hint: str | None = None,
        *,
        at: Literal["auto", "key", "value"] = "auto",
        shown_path: Sequence[str | int] | None = None,
    ) -> Problem:
        """A problem about the field at `path` (`shown_path` is printed, default `path`)."""
        path = tuple(path)
        shown = format_path(path if shown_path is None else shown_path)
        found = path
        while found not in self.positions and found:
            found = found[:-1]
        position = self.positions.get(found)
        if position is None:
            return Problem(self.file, 1, 1, shown, message, hint)
        if position.override is not None:
            return Problem(f"--set {position.override}", None, None, shown, message, hint)
        if found != path or at == "key" or (at == "auto" and position.collection):
            spot = position.key or position.value
        else:
            spot = position.value or position.key
        line, column = spot or (1, 1)
        return Problem(self.file, line, column, shown, message, hint)

    def mark_override(self, path: PathTuple, override: str) -> None:
        """Record that `--set override` wrote `path`: it and all below it come from there."""
        for known in [p for p in self.positions if p[: len(path)] == path]:
            del self.positions[known]
        self.positions[path] = Position(None, None, override=override)


def make_yaml() -> YAML:
    """A round-trip YAML 1.2 parser; duplicate keys are found by `_duplicate_keys` instead."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True  # all duplicates are reported at once, with positions
    yaml.version = None  # the document's own %YAML directive, else 1.2
    yaml.Composer = _GuardedComposer
    yaml.Resolver = _CoreResolver
    return yaml


@dataclass
class ParsedDocument:
    """A parsed YAML document: the round-trip data, where each field is, what went wrong."""

    data: Any  # ruamel round-trip data (CommentedMap, ...), None when the text is unusable
    positions: dict[PathTuple, Position]
    problems: list[Problem]


def _mark(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def _syntax_problem(file: str, error: YAMLError, line_offset: int = 0) -> Problem:
    """One problem for a YAML syntax error, at its position."""
    if isinstance(error, MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "unreadable YAML"
        hint = None
        if isinstance(error, SpecLimitError) and mark is not None:
            line, column = _mark(mark)
            if problem.startswith("recursive"):
                hint = "write the value out instead of the alias"
            elif "nested" in problem:
                hint = "a spec needs far fewer levels"
            else:
                hint = "a spec needs far fewer; write the values out, or use fewer aliases"
            return Problem(file, line + line_offset, column, "", problem, hint)
        if error.context and error.problem and error.context_mark is not None:
            hint = f"{error.context} (line {error.context_mark.line + 1 + line_offset})"
        if "'\\t'" in problem:
            problem, hint = "a tab character; YAML indents with spaces only", None
        if mark is not None:
            line, column = _mark(mark)
            return Problem(file, line + line_offset, column, "", f"invalid YAML: {problem}", hint)
        return Problem(file, 1, 1, "", f"invalid YAML: {problem}", hint)
    return Problem(file, 1, 1, "", f"invalid YAML: {error}")


def _scalar_key(node: Node) -> str | None:
    if isinstance(node, ScalarNode):
        return str(node.value)
    return None


def _duplicate_keys(file: str, node: Node, path: PathTuple, out: list[Problem]) -> None:
    """Every key given twice in one mapping, at the second one (the first is kept nowhere)."""
    if isinstance(node, MappingNode):
        first_seen: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            if key is None or key == "<<":
                continue
            if key in first_seen:
                line, column = _mark(key_node.start_mark)
                first_line = first_seen[key].start_mark.line + 1
                out.append(
                    Problem(
                        file,
                        line,
                        column,
                        format_path(path),
                        f"duplicate key '{key}'",
                        f"it is first given on line {first_line}; a key may appear once",
                    )
                )
            else:
                first_seen[key] = key_node
            _duplicate_keys(file, value_node, (*path, key), out)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(file, item, (*path, index), out)


def parse_yaml(text: str, file: str) -> ParsedDocument:
    """Parse one YAML document: round-trip data, positions, and syntax/duplicate problems."""
    yaml = make_yaml()
    try:
        node = yaml.compose(text)
    except YAMLError as error:
        return ParsedDocument(None, {}, [_syntax_problem(file, error)])
    problems: list[Problem] = []
    if node is not None:
        _duplicate_keys(file, node, (), problems)
    try:
        data = make_yaml().load(text)
    except YAMLError as error:  # compose succeeded, so this is a construction problem
        return ParsedDocument(None, {}, [*problems, _syntax_problem(file, error)])
    positions: dict[PathTuple, Position] = {}
    _collect_positions(data, (), None, (1, 1), positions)
    return ParsedDocument(data, positions, problems)


def load_yaml_text(path: Path, file: str) -> tuple[str | None, list[Problem]]:
    """The file's text, or a problem saying why it cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, [Problem(file, None, None, "", "no such file")]
    except IsADirectoryError:
        return None, [Problem(file, None, None, "", "is a directory, not a spec file")]
    except OSError as error:
        return None, [Problem(file, None, None, "", f"cannot read the file: {error.strerror}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return None, [Problem(file, line, 1, "", "the file is not UTF-8 text")]
    return text, []


def _collect_positions(
    data: Any,
    path: PathTuple,
    key: tuple[int, int] | None,
    value: tuple[int, int] | None,
    out: dict[PathTuple, Position],
) -> None:
    collection = isinstance(data, (CommentedMap, CommentedSeq))
    if collection and path == ():
        value = (data.lc.line + 1, data.lc.col + 1)
    out[path] = Position(key, value, collection=collection)
    if isinstance(data, CommentedMap):
        for child_key in data:
            name = _key_text(child_key)
            try:
                key_line, key_col = data.lc.key(child_key)
                value_line, value_col = data.lc.value(child_key)
            except (KeyError, TypeError):  # a key merged in with `<<:`: where the parent is
                _collect_positions(data[child_key], (*path, name), key, value, out)
                continue
            if data[child_key] is None and value_line != key_line:
                # An empty value (`metrics:` then only comments): ruamel places it at the
                # next token, often the next key; the key's own line is where it is.
                value_line, value_col = key_line, key_col
            _collect_positions(
                data[child_key],
                (*path, name),
                (key_line + 1, key_col + 1),
                (value_line + 1, value_col + 1),
                out,
            )
    elif isinstance(data, CommentedSeq):
        for index, item in enumerate(data):
            try:
                line, col = data.lc.item(index)
                spot: tuple[int, int] | None = (line + 1, col + 1)
            except (KeyError, TypeError):
                spot = value
            _collect_positions(item, (*path, index), spot, spot, out)


def _key_text(key: Any) -> str:
    """A mapping key as text: YAML keys that are not strings are named as written."""
    if isinstance(key, str):
        return str(key)
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, TaggedScalar):
        return str(key.value)
    return str(key)


def to_plain(data: Any, locator: Locator, path: PathTuple = ()) -> tuple[Any, list[Problem]]:
    """Round-trip data -> plain dict/list/str/int/float/bool/None; problems for the rest."""
    problems: list[Problem] = []

    def convert(value: Any, where: PathTuple) -> Any:
        tag = getattr(value, "tag", None)
        tag_value = getattr(tag, "value", None) if tag is not None else None
        if isinstance(value, TaggedScalar):
            if tag_value == _STR_TAG:
                return str(value.value)
            problems.append(_tag_problem(locator, where, tag_value))
            return str(value.value)
        if isinstance(value, Mapping):
            if (
                tag_value is not None
                and isinstance(value, CommentedMap)
                and tag_value not in ("tag:yaml.org,2002:map",)
            ):
                problems.append(_tag_problem(locator, where, tag_value))
            return {_key_text(k): convert(v, (*where, _key_text(k))) for k, v in value.items()}
        if isinstance(value, list):
            if tag_value is not None and tag_value != "tag:yaml.org,2002:seq":
                problems.append(_tag_problem(locator, where, tag_value))
            return [convert(item, (*where, index)) for index, item in enumerate(value)]
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, datetime.datetime):
            problems.append(
                locator.problem(
                    where,
                    "a date and time is not a valid value here",
                    "quote it to make it a string",
                )
            )
            return str(value)
        if isinstance(value, datetime.date):
            return value.isoformat()  # YAML 1.2's core schema has no dates: keep the text
        if isinstance(value, bytes):
            problems.append(locator.problem(where, "binary data is not a valid value"))
            return None
        problems.append(locator.problem(where, f"unsupported YAML value {value!r}"))
        return None

    return convert(data, path), problems


def _tag_problem(locator: Locator, path: PathTuple, tag: str | None) -> Problem:
    return locator.problem(
        path,
        f"YAML tags such as '{_short_tag(tag)}' are not allowed in a spec",
        "remove the tag",
    )


def _short_tag(tag: str | None) -> str:
    if tag is None:
        return "!"
    if tag.startswith("tag:yaml.org,2002:"):
        return "!!" + tag[len("tag:yaml.org,2002:") :]
    return tag


def dump_yaml(data: Any) -> str:
    """Round-trip data back to YAML text (comments and key order kept)."""
    stream = io.StringIO()
    make_yaml().dump(data, stream)
    return stream.getvalue()


def is_finite_number(value: Any) -> bool:
    """A YAML number that Python code can spell: not `.inf` or `.nan`."""
    return not isinstance(value, float) or math.isfinite(value)
