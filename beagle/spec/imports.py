"""Checks of the import paths a spec names: the model class, user losses and metrics,
python data functions, and (with imports) the optax optimizer and schedule signatures.

Two depths, as docs/spec.md ("Errors") says:

- `find` (`beagle gen`): only whether each path's module can be found, with the current
  directory on `sys.path`. No user code runs: a dotted module is looked up one part at a
  time with `importlib.machinery.PathFinder` in its parent's search locations, because
  `importlib.util.find_spec("a.b")` would import (run) the package `a` to get there.
- `import` (`beagle check`, `beagle run`): the module is imported, the attribute must
  exist, and the optimizer's and schedule's keyword arguments must bind to the signature
  of the optax function (`inspect.signature`); a user function's or model class's
  arguments are bound too where Python can tell its signature.

optax is imported here lazily, inside the import-phase function only, so that importing
`beagle.spec` stays free of jax, flax, optax and orbax.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from beagle import catalog
from beagle.spec.loader import Locator
from beagle.spec.models import IMPORT_PATH_PATTERN
from beagle.spec.problems import PathTuple, Problem, closest, did_you_mean

__all__ = [
    "ImportTarget",
    "check_data_files",
    "check_imports",
    "import_targets",
    "module_can_be_found",
]

ImportMode = Literal["find", "import"]


@dataclass(frozen=True)
class ImportTarget:
    """One import path a spec names, where it is, and the keyword arguments it is given."""

    path: PathTuple  # where the import path is written
    value: str  # "package.module:Attribute"
    what: str  # "model class", "loss function", ...
    args: dict[str, Any] | None = None  # keyword arguments to bind, if any
    args_path: PathTuple | None = None


def _well_formed(value: Any) -> bool:
    import keyword

    return (
        isinstance(value, str)
        and re.fullmatch(IMPORT_PATH_PATTERN, value) is not None
        and not any(keyword.iskeyword(p) for p in re.split(r"[.:]", value))
    )


def import_targets(doc: dict[str, Any]) -> list[ImportTarget]:
    """Every well-formed import path in a plain spec document (malformed ones are skipped:
    they already have a structural problem)."""
    targets: list[ImportTarget] = []
    model = doc.get("model")
    if isinstance(model, dict) and _well_formed(model.get("class")):
        args = model.get("args")
        targets.append(
            ImportTarget(
                ("model", "class"),
                model["class"],
                "model class",
                args if isinstance(args, dict) else {},
                ("model", "args"),
            )
        )
    data = doc.get("data")
    if isinstance(data, dict) and data.get("source") == "python":
        for key in ("train", "val"):
            if _well_formed(data.get(key)):
                targets.append(ImportTarget(("data", key), data[key], "data function"))
    for section, what in (("losses", "loss function"), ("metrics", "metric function")):
        entries = doc.get(section)
        if not isinstance(entries, dict):
            continue
        for name, entry in entries.items():
            if isinstance(entry, dict) and _well_formed(entry.get("fn")):
                args = entry.get("args")
                targets.append(
                    ImportTarget(
                        (section, name, "fn"),
                        entry["fn"],
                        what,
                        args if isinstance(args, dict) else {},
                        (section, name, "args"),
                    )
                )
    return targets


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current directory first on sys.path, as with `python -m`, for the duration."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def module_can_be_found(module: str) -> tuple[bool, str | None]:
    """Whether `module` can be found, without running any of its (or its parents') code.

    Returns (found, the longest parent package found when not: for hints).
    """
    parts = module.split(".")
    search: list[str] | None = None
    found_prefix: str | None = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        spec: Any
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None) or True
            locations = getattr(loaded, "__path__", None)
        else:
            try:
                if depth == 1:
                    spec = importlib.util.find_spec(name)
                else:
                    spec = importlib.machinery.PathFinder.find_spec(name, search)
            except (ImportError, ValueError):
                spec = None
            locations = getattr(spec, "submodule_search_locations", None)
        if spec is None:
            return False, found_prefix
        found_prefix = name
        if depth < len(parts):
            if not locations:  # a plain module has no submodules
                return False, found_prefix
            search = list(locations)
    return True, None


def _module_hint(module: str, parent: str | None) -> str:
    if parent is None:
        top = module.split(".")[0]
        local = [m.name for m in pkgutil.iter_modules([os.getcwd()])]
        near = closest(top, local, n=1)
        if near:
            return f"did you mean '{near[0]}'? (found in the current directory)"
        return (
            "modules are looked up on sys.path and in the current directory: run beagle "
            "from the folder that holds your package"
        )
    loaded = sys.modules.get(parent)
    locations = getattr(loaded, "__path__", None) if loaded is not None else None
    if locations is None:
        spec = importlib.util.find_spec(parent) if "." not in parent else None
        locations = getattr(spec, "submodule_search_locations", None)
    if not locations:
        return f"'{parent}' is a module, not a package"
    children = sorted(m.name for m in pkgutil.iter_modules(list(locations)))
    rest = module[len(parent) + 1 :].split(".")[0]
    hint = did_you_mean(rest, children, f"modules in '{parent}'")
    if hint and hint.startswith("did you mean"):
        near = closest(rest, children, n=1)
        return f"did you mean '{parent}.{near[0]}'?"
    return hint or f"'{parent}' has no modules"


def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if not isinstance(names, (list, tuple)):
        names = [n for n in vars(module) if not n.startswith("_")]
        own = [
            n
            for n in names
            if getattr(getattr(module, n, None), "__module__", None) == module.__name__
        ]
        names = own or names
    return sorted(str(n) for n in names)


def _bind_problems(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    label: str,
    args_path: PathTuple,
    locator: Locator,
    *,
    skip_first: int = 0,
    provided: tuple[str, ...] = (),
) -> list[Problem]:
    """Unknown keyword arguments, and required ones not given, of `func`."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    params = list(signature.parameters.values())[skip_first:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        named = None
    else:
        named = [
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
    problems = []
    if named is not None:
        for key in kwargs:
            if key not in named:
                problems.append(
                    locator.problem(
                        (*args_path, key),
                        f"{label} has no argument '{key}'",
                        did_you_mean(key, [n for n in named if n not in provided], "its arguments"),
                        at="key",
                        shown_path=args_path,
                    )
                )
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in kwargs
        and p.name not in provided
    ]
    if missing:
        problems.append(
            locator.problem(
                args_path,
                f"{label} needs argument{'s' if len(missing) > 1 else ''} "
                + ", ".join(f"'{m}'" for m in missing),
                at="key",
            )
        )
    return problems


def check_imports(doc: dict[str, Any], locator: Locator, mode: ImportMode) -> list[Problem]:
    """Problems with the import paths of a plain spec document (see the module docstring)."""
    problems: list[Problem] = []
    with _cwd_on_path():
        for target in import_targets(doc):
            problems.extend(_check_target(target, locator, mode))
    if mode == "import":
        problems.extend(_check_optax(doc, locator))
        problems.extend(check_data_files(doc, locator))
    return problems


def check_data_files(doc: dict[str, Any], locator: Locator) -> list[Problem]:
    """With `imports="import"` (`check`, `run`): each `npz` data file exists and is a file.

    Only existence: what the archive holds is read when the data is loaded. Paths are
    relative to the current folder, as `beagle.data` opens them.
    """
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("source") != "npz":
        return []
    problems: list[Problem] = []
    for key in ("train", "val"):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > 4096 or "\0" in value:
            continue  # absent or malformed: a structural problem already says so
        file = os.path.join(os.getcwd(), value)
        if os.path.isdir(file):
            problems.append(
                locator.problem(("data", key), f"{value!r} is a folder, not an .npz file")
            )
        elif not os.path.isfile(file):
            problems.append(
                locator.problem(
                    ("data", key),
                    f"no such file: {value!r}",
                    "paths are relative to the current folder",
                )
            )
    return problems


def _check_target(target: ImportTarget, locator: Locator, mode: ImportMode) -> list[Problem]:
    module_name, _, attribute = target.value.partition(":")
    found, parent = module_can_be_found(module_name)
    if not found:
        return [
            locator.problem(
                target.path,
                f"module '{module_name}' cannot be found",
                _module_hint(module_name, parent),
            )
        ]
    if mode == "find":
        return []
    try:
        module = importlib.import_module(module_name)
    except BaseException as error:  # user code: anything may happen, never a traceback
        if isinstance(error, KeyboardInterrupt):
            raise
        return [
            locator.problem(
                target.path,
                f"importing '{module_name}' failed: {type(error).__name__}: {error}",
            )
        ]
    value: Any = module
    walked = module_name
    for part in attribute.split("."):
        if not hasattr(value, part):
            names = (
                _public_names(value)
                if inspect.ismodule(value)
                else [n for n in dir(value) if not n.startswith("_")]
            )
            return [
                locator.problem(
                    target.path,
                    f"'{walked}' has no attribute '{part}'",
                    did_you_mean(part, names, f"'{walked}' offers"),
                )
            ]
        value = getattr(value, part)
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    if not callable(value):
        return [locator.problem(target.path, f"'{target.value}' is not callable")]
    if target.args is not None and target.args_path is not None:
        provided = ("parent", "name") if target.what == "model class" else ()
        return _bind_problems(
            value, target.args, f"'{target.value}'", target.args_path, locator, provided=provided
        )
    return []


def _check_optax(doc: dict[str, Any], locator: Locator) -> list[Problem]:
    optimizer = doc.get("optimizer")
    if not isinstance(optimizer, dict):
        return []
    problems: list[Problem] = []
    try:
        import optax
    except ImportError:  # pragma: no cover - optax is a dependency
        return []
    name = optimizer.get("name")
    args = optimizer.get("args")
    if isinstance(name, str) and name in catalog.OPTIMIZERS and hasattr(optax, name):
        kwargs = dict(args) if isinstance(args, dict) else {}
        problems.extend(
            _bind_problems(
                getattr(optax, name),
                kwargs,
                f"optax.{name}",
                ("optimizer", "args"),
                locator,
                provided=("learning_rate",),
            )
        )
    schedule = optimizer.get("learning_rate")
    if isinstance(schedule, dict):
        schedule_name = schedule.get("schedule")
        if (
            isinstance(schedule_name, str)
            and schedule_name in catalog.SCHEDULES
            and hasattr(optax, schedule_name)
        ):
            kwargs = {k: v for k, v in schedule.items() if k != "schedule"}
            problems.extend(
                _bind_problems(
                    getattr(optax, schedule_name),
                    kwargs,
                    f"optax.{schedule_name}",
                    ("optimizer", "learning_rate"),
                    locator,
                )
            )
    return problems
