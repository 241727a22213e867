"""`load_spec`: a spec file (plus `--set` overrides) -> a validated `LoadedSpec`, or every
problem at once.

The stages, each in its own module: read and parse the YAML with positions
(`loader`), apply overrides (`overrides`), check the structure against the pydantic
models (`validate`), check fields against each other (`semantics`), check import paths
(`imports`). Problems from all of them are collected and raised together in a
`SpecError`, sorted by position; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from beagle.spec.imports import check_imports
from beagle.spec.loader import Locator, dump_yaml, load_yaml_text, parse_yaml, to_plain
from beagle.spec.models import Spec
from beagle.spec.overrides import apply_overrides
from beagle.spec.problems import PathTuple, Problem, SpecError, sort_problems
from beagle.spec.semantics import check_semantics
from beagle.spec.validate import check_structure, drop_null_mappings, show_value

__all__ = ["LoadedSpec", "load_spec"]

ImportChecks = Literal["find", "import", "none"]


@dataclass(frozen=True)
class LoadedSpec:
    """A valid spec, where it came from, and how to point at its fields."""

    spec: Spec  # the validated spec (overrides applied)
    path: Path  # the spec file, as given (relative paths stay relative)
    text: str  # the spec as run: the file's text, or with overrides the document re-dumped
    source_name: str  # the file name without its folder, for the generated module's header
    hash: str  # sha256 (hex) of `text`
    document: dict[str, Any] = field(repr=False)  # the plain data that was validated
    overrides: tuple[str, ...] = ()
    _locator: Locator = field(default_factory=lambda: Locator(""), repr=False, compare=False)

    def problem(
        self, path: PathTuple | Sequence[str | int], message: str, hint: str | None = None
    ) -> Problem:
        """A problem pointing at the field at `path` (or its nearest written parent).

        For checks made after loading: the import of user code, the `eval_shape` trace.
        A field set by `--set` points at that override.
        """
        return self._locator.problem(tuple(path), message, hint)


def _top_level_problem(data: Any, file: str) -> Problem | None:
    if data is None:
        return Problem(
            file,
            1,
            1,
            "",
            "the spec is empty",
            "a spec is a mapping with at least version, name, model, data, optimizer, "
            "losses and train",
        )
    if not isinstance(data, dict):
        return Problem(
            file,
            1,
            1,
            "",
            f"a spec is a mapping of sections (version, name, model, ...), got {show_value(data)}",
        )
    return None


def load_spec(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    imports: ImportChecks = "find",
) -> LoadedSpec:
    """Load, override, validate and check a spec; raise `SpecError` with every problem.

    `imports`: `"find"` (for `beagle gen`) checks only that each import path's module can
    be found; `"import"` (for `beagle check` and `beagle run`) imports them, checks the
    attributes exist and that optimizer and schedule arguments bind to optax's signatures;
    `"none"` skips import paths altogether (for tests of the language itself).
    """
    spec_path = Path(path)
    file = str(path)
    text, problems = load_yaml_text(spec_path, file)
    if text is None:
        raise SpecError(problems)
    parsed = parse_yaml(text, file)
    problems = list(parsed.problems)
    if parsed.data is None and parsed.problems:
        raise SpecError(sort_problems(problems))
    top = _top_level_problem(parsed.data, file)
    if top is not None:
        raise SpecError(sort_problems([*problems, top]))
    locator = Locator(file, parsed.positions)
    problems.extend(apply_overrides(parsed.data, overrides, locator))
    document, conversion = to_plain(parsed.data, locator)
    problems.extend(conversion)
    drop_null_mappings(document)
    spec, structural = check_structure(document, locator)
    reported = {(p.line, p.column, p.path) for p in conversion}
    problems.extend(p for p in structural if (p.line, p.column, p.path) not in reported)
    problems.extend(check_semantics(document, locator))
    if imports != "none":
        problems.extend(check_imports(document, locator, imports))
    if problems or spec is None:
        raise SpecError(sort_problems(problems))
    run_text = dump_yaml(parsed.data) if overrides else text
    return LoadedSpec(
        spec=spec,
        path=spec_path,
        text=run_text,
        source_name=spec_path.name,
        hash=hashlib.sha256(run_text.encode("utf-8")).hexdigest(),
        document=document,
        overrides=tuple(overrides),
        _locator=locator,
    )
