"""What the CLI and the tests call: `check`, `generate`, `schema`, `run`.

Nothing here prints or exits. Each function returns values (problems are values too) or
raises one of beagle's exceptions; `beagle.cli` turns them into output and an exit code.
Heavy libraries (jax, flax, optax, orbax) are imported inside the functions that need
them, so `beagle gen` and `beagle schema` stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beagle.spec import LoadedSpec, Problem, SpecError, load_spec

if TYPE_CHECKING:
    from beagle.runner import RunResult
    from beagle.runner.distributed import Cluster

__all__ = [
    "GenerateReport",
    "check",
    "generate",
    "run",
    "schema",
]


@dataclass
class GenerateReport:
    """What `generate` did: per spec, problems, or the module written / found stale."""

    problems: list[Problem] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)  # modules whose content changed
    unchanged: list[Path] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)  # with check=True: one per stale module
    stale_specs: list[Path] = field(default_factory=list)  # the specs of those modules

    @property
    def stale(self) -> bool:
        return bool(self.diffs)


def check(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> list[Problem]:
    """Validate each spec fully: schema, names, imports, then the `eval_shape` trace."""
    problems: list[Problem] = []
    for path in paths:
        try:
            loaded = load_spec(path, overrides, imports="import")
        except SpecError as error:
            problems.extend(error.problems)
            continue
        from beagle.runner import trace_spec

        problems.extend(trace_spec(loaded))
    return problems


def generate(
    paths: Sequence[str | Path], out_dir: str | Path = "generated", *, check: bool = False
) -> GenerateReport:
    """Compile each spec into `out_dir/<name>.py`; with `check`, only diff against it.

    A spec that cannot be used is never half-compiled: when any spec has problems, nothing
    is written at all.
    """
    from beagle.compiler import compile_spec, diff_module, write_module

    report = GenerateReport()
    out = Path(out_dir)
    compiled: list[tuple[LoadedSpec, str]] = []
    named: dict[str, LoadedSpec] = {}
    for path in paths:
        try:
            loaded = load_spec(path, imports="find")
        except SpecError as error:
            report.problems.extend(error.problems)
            continue
        first = named.setdefault(loaded.spec.name, loaded)
        if first is not loaded:
            report.problems.append(
                loaded.problem(
                    ("name",),
                    f"{first.path} has the same name {loaded.spec.name!r}; both would be "
                    f"written to {out / (loaded.spec.name + '.py')}",
                    "give each spec its own name, or generate them into different folders",
                )
            )
            continue
        compiled.append((loaded, compile_spec(loaded.spec, loaded.source_name)))
    blocking = _blocking_file(out)
    if blocking is not None:
        what = "is a file" if blocking == out else f"is inside {blocking}, which is a file"
        report.problems.append(
            Problem(
                f"--out {out_dir}",
                None,
                None,
                "",
                f"{out} {what}, not a folder",
                "give --out a folder (it is created when missing)",
            )
        )
    if report.problems:
        return report
    for loaded, text in compiled:
        target = out / f"{loaded.spec.name}.py"
        if check:
            diff = diff_module(text, out, loaded.spec.name)
            if diff is not None:
                report.diffs.append(diff)
                report.stale_specs.append(loaded.path)
            continue
        changed = write_module(text, out, loaded.spec.name)
        (report.written if changed else report.unchanged).append(target)
    return report


def _blocking_file(path: Path) -> Path | None:
    """The file (not folder) at `path` or at one of its parents, if there is one."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def schema() -> dict[str, Any]:
    """The JSON Schema of a spec, for editors."""
    from beagle.spec.schema import spec_json_schema

    return spec_json_schema()


def run(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    restart: bool = False,
    progress: bool = False,
    notify: Callable[[str], None] = lambda message: None,
    cluster: Cluster | None = None,
) -> RunResult:
    """Compile the spec (overrides applied) and train it; see `beagle.runner.run_spec`.

    `progress=True` shows a progress bar and a line per epoch on the terminal; the default
    keeps this function silent, like the rest of the API (the CLI asks for it explicitly).
    With `cluster` (`beagle.runner.distributed.Cluster`), this process first joins a
    multi-process run; every process calls `run` with the same spec. Raises
    `beagle.runner.distributed.ClusterError` when it cannot join.
    """
    loaded = load_spec(path, overrides, imports="import")
    from beagle.runner import run_spec
    from beagle.runner.distributed import Team, initialize

    if cluster is None or not cluster.enabled:
        return run_spec(loaded, restart=restart, progress=progress, notify=notify)
    initialize(cluster)
    team = Team.current()
    return run_spec(loaded, restart=restart, progress=progress, notify=notify, team=team)
