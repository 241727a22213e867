"""The `beagle` command: parse options, call `beagle.api`, print, pick the exit code.

Exit codes: 0 done, 1 stale modules (`gen --check`) or training failed, 2 invalid spec or
usage, 3 interrupted after saving a checkpoint. Nothing here imports jax: `run` and
`check` reach it through `beagle.api` only when they need it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from beagle import __version__
from beagle.runner.distributed import DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_TIMEOUT

if TYPE_CHECKING:
    from beagle.runner.distributed import Cluster
    from beagle.runner.inference import LoadedRun

app = typer.Typer(
    name="beagle",
    help="Train JAX/Flax models from a declarative YAML spec.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help, as click prints it: typer's rich help shows `<bool>` after flags (so users
    # try `--restart true`, which fails) and braces around arguments.
    rich_markup_mode=None,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 3


class Distributed(str, Enum):
    """`--distributed`'s values."""

    auto = "auto"


SpecPaths = Annotated[
    list[Path], typer.Argument(metavar="SPEC", help="Spec files.", show_default=False)
]


def _fail(lines: list[str], code: int) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"beagle {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Train JAX/Flax models from a declarative YAML spec."""


@app.command()
def check(
    specs: SpecPaths,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a key by its dotted path."),
    ] = None,
) -> None:
    """Validate specs and trace their steps with jax.eval_shape (no training)."""
    from beagle import api

    problems = api.check(specs, set_ or ())
    if problems:
        raise _fail([str(problem) for problem in problems], EXIT_INVALID)
    for spec in specs:
        typer.echo(f"{spec}: ok")


@app.command()
def gen(
    specs: SpecPaths,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("generated"),
    check_only: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; show a diff of every stale module."),
    ] = False,
) -> None:
    """Compile specs into OUT/<name>.py."""
    # pydantic would scan every installed distribution's entry points for plugins (about
    # 10 ms); `gen` validates beagle's own models only, and is meant to be quick.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from beagle import api

    report = api.generate(specs, out, check=check_only)
    if report.problems:
        raise _fail([str(problem) for problem in report.problems], EXIT_INVALID)
    if check_only:
        if report.stale:
            for diff in report.diffs:
                typer.echo(diff, nl=not diff.endswith("\n"))
            typer.echo(
                f"{len(report.diffs)} module(s) out of date: run `beagle gen "
                + " ".join(str(spec) for spec in report.stale_specs)
                + (f" --out {out}`" if out != Path("generated") else "`"),
                err=True,
            )
            raise typer.Exit(EXIT_FAILED)
        typer.echo(f"{len(specs)} module(s) up to date")
        return
    for path in report.written:
        typer.echo(f"wrote {path}")
    for path in report.unchanged:
        typer.echo(f"unchanged {path}")


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(metavar="SPEC", help="Spec file.", show_default=False)],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a key by its dotted path."),
    ] = None,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Start over: the checkpoints move to <checkpoint.dir>.previous and the run "
            "folder's files to <log.dir>.previous (one generation), once the spec proves usable.",
        ),
    ] = False,
    no_progress: Annotated[
        bool,
        typer.Option("--no-progress", help="No progress bars or epoch lines: only the summary."),
    ] = False,
    coordinator: Annotated[
        str | None,
        typer.Option(
            "--coordinator",
            metavar="HOST:PORT",
            help="Several processes: process 0's address and a free port (the same on every "
            "process).",
        ),
    ] = None,
    num_processes: Annotated[
        int | None, typer.Option("--num-processes", help="Several processes: how many.")
    ] = None,
    process_id: Annotated[
        int | None,
        typer.Option("--process-id", help="Several processes: this one's index, 0 to N-1."),
    ] = None,
    distributed: Annotated[
        Distributed | None,
        typer.Option(
            "--distributed",
            help="auto: join a multi-process run found by JAX's cluster detection (SLURM, "
            "Open MPI, Cloud TPU).",
        ),
    ] = None,
    heartbeat_timeout: Annotated[
        int,
        typer.Option(
            "--heartbeat-timeout",
            metavar="SECONDS",
            help="Several processes: end when another process has been silent this long.",
        ),
    ] = DEFAULT_HEARTBEAT_TIMEOUT,
    connect_timeout: Annotated[
        int,
        typer.Option(
            "--connect-timeout",
            metavar="SECONDS",
            help="Several processes: give up when the coordinator is not reachable this long.",
        ),
    ] = DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Compile a spec and train it, resuming from its latest checkpoint."""
    from beagle.runner.distributed import Cluster, ClusterError

    cluster = Cluster(
        coordinator=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        auto=distributed is Distributed.auto,
        heartbeat_timeout=heartbeat_timeout,
        connect_timeout=connect_timeout,
    )
    try:
        cluster.check()
    except ClusterError as error:
        raise _fail([f"beagle run: {error}"], EXIT_INVALID) from None
    from beagle.runner.cache import enable_compile_cache

    enable_compile_cache()  # warm starts: `beagle run` alone keeps compiled programs
    # Outside train_loop (which saves first), SIGTERM ends the command like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        _run(spec, set_ or (), restart=restart, progress=not no_progress, cluster=cluster)
    except KeyboardInterrupt:
        raise _fail(
            [
                f"{spec}: interrupted outside training; checkpoints already written are kept",
                "re-run the same command to continue",
            ],
            EXIT_INTERRUPTED,
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(
    spec: Path,
    overrides: list[str] | tuple[()],
    *,
    restart: bool,
    progress: bool,
    cluster: Cluster,
) -> None:
    """`beagle run`'s work, its exceptions turned into messages and exit codes."""
    from beagle import api
    from beagle.data import DataError
    from beagle.runner import RunRefused, print_summary
    from beagle.runner.distributed import ClusterError, first_line
    from beagle.runner.origin import raised_in_user_code
    from beagle.spec import SpecError
    from beagle.training import DataExhaustedError, NonFiniteLossError, TrainingInterrupted

    try:
        result = api.run(
            spec,
            overrides,
            restart=restart,
            progress=progress,
            notify=lambda message: typer.echo(message, err=True),
            cluster=cluster,
        )
    except ClusterError as error:
        raise _fail([f"{spec}: {error}"], EXIT_INVALID) from None
    except SpecError as error:
        raise _fail([str(problem) for problem in error.problems], EXIT_INVALID) from None
    except RunRefused as error:
        raise _fail([f"{spec}: {error}"], EXIT_INVALID) from None
    except TrainingInterrupted as error:
        advice = (
            "re-run the same command to continue"
            if error.checkpoint_path is not None
            else "the spec has no `checkpoint:` section, so re-running starts over"
        )
        raise _fail([f"{spec}: {error}", advice], EXIT_INTERRUPTED) from None
    except NonFiniteLossError as error:
        raise _fail([f"{spec}: training failed: {error}"], EXIT_FAILED) from None
    except DataExhaustedError as error:
        raise _fail(
            [
                f"{spec}: training failed: {error}",
                "  hint: train.batches_per_epoch and validation.batches must not exceed "
                "the batches the data gives",
            ],
            EXIT_FAILED,
        ) from None
    except DataError as error:  # data found unusable while training (a file that does not decode)
        hint = [f"  hint: {error.hint}"] if error.hint else []
        raise _fail([f"{spec}: training failed: {error.message}", *hint], EXIT_FAILED) from None
    except Exception as error:
        if cluster.enabled and _lost_peer(error):
            raise _fail(
                [
                    traceback.format_exc().rstrip(),
                    f"{spec}: training failed: another process of this run was lost "
                    f"({first_line(error)})",
                    "  hint: re-run every process with the same command; they resume from "
                    "the last complete checkpoint",
                ],
                EXIT_FAILED,
            ) from None
        if raised_in_user_code(error):  # their model, loss or data function: theirs to read
            raise _fail(
                [traceback.format_exc().rstrip(), f"{spec}: training failed"], EXIT_FAILED
            ) from None
        raise _fail(
            [
                traceback.format_exc().rstrip(),
                f"{spec}: internal error in beagle {__version__} (not in your spec or code); "
                "please report it with the traceback above",
            ],
            EXIT_FAILED,
        ) from None
    if result.process_index == 0:
        print_summary(result)


def _lost_peer(error: BaseException) -> bool:
    """Whether `error` is the runtime's report of a collective whose peers went away."""
    import jax

    return isinstance(error, jax.errors.JaxRuntimeError)


CheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        metavar="best|latest|STEP|PATH",
        help="Which checkpoint (default: best when the spec keeps one, else latest).",
    ),
]
RunArgument = Annotated[
    Path,
    typer.Argument(metavar="SPEC", help="The spec file, or its run folder.", show_default=False),
]


def _load_run(spec: Path, checkpoint: str | None) -> LoadedRun:
    """The trained run `spec` names, or exit 2 saying why there is none."""
    from beagle.runner.inference import RunNotUsable, load_run
    from beagle.spec import SpecError

    try:
        return load_run(spec, checkpoint)
    except RunNotUsable as error:
        raise _fail([f"{spec}: {error}"], EXIT_INVALID) from None
    except SpecError as error:
        raise _fail([str(problem) for problem in error.problems], EXIT_INVALID) from None


@app.command("eval")
def eval_(
    spec: RunArgument,
    checkpoint: CheckpointOption = None,
    split: Annotated[str, typer.Option("--split", help="val, test or train.")] = "val",
) -> None:
    """Evaluate a checkpoint's model on every example of a split."""
    from beagle.runner.inference import RunNotUsable, evaluate
    from beagle.training import checkpoint_info

    run = _load_run(spec, checkpoint)
    try:
        result = evaluate(run, split)
    except RunNotUsable as error:
        raise _fail([f"{spec}: {error}"], EXIT_INVALID) from None
    info = checkpoint_info(run.checkpoint)
    record = {
        "checkpoint": str(run.checkpoint),
        "step": info.step,
        "epoch": info.epoch,
        "split": split,
        "examples": result["examples"],
        "metrics": result["metrics"],
        "spec_hash": info.metadata.get("spec_hash"),
        "module_hash": info.metadata.get("module_hash"),
        "beagle_version": __version__,
    }
    out = run.folder / "eval" / f"checkpoint_{info.step}-{split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    typer.echo(f"{run.checkpoint} (epoch {info.epoch}) on {split}: {result['examples']} examples")
    for name, value in sorted(result["metrics"].items()):
        typer.echo(f"  {name:<24} {value:.6g}")
    typer.echo(f"wrote {out}")


@app.command()
def predict(
    spec: RunArgument,
    input_: Annotated[
        Path, typer.Option("--input", metavar="FILE.npz", help="Arrays keyed as model.input.")
    ],
    output: Annotated[
        Path, typer.Option("--output", metavar="FILE.npz", help="Where the outputs go.")
    ],
    checkpoint: CheckpointOption = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Rows per call (default: the spec's).")
    ] = None,
) -> None:
    """Apply a checkpoint's model, in eval mode, to every row of an npz file."""
    import numpy as np

    from beagle.runner.inference import RunNotUsable

    if batch_size is not None and batch_size < 1:
        raise _fail([f"--batch-size must be at least 1, got {batch_size}"], EXIT_INVALID)
    try:
        with np.load(input_, allow_pickle=False) as stored:
            inputs = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as error:
        raise _fail([f"{input_}: cannot read it as an npz file ({error})"], EXIT_INVALID) from None
    run = _load_run(spec, checkpoint)
    try:
        outputs = run.predict(inputs, batch_size)
    except RunNotUsable as error:
        raise _fail([f"{input_}: {error}"], EXIT_INVALID) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = dict(outputs)
    with output.open("wb") as handle:
        np.savez(handle, **arrays)
    rows = next(iter(outputs.values())).shape[0]
    typer.echo(f"wrote {output}: {', '.join(sorted(outputs))} for {rows} rows ({run.checkpoint})")


@app.command()
def export(
    spec: RunArgument,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Output folder.")],
    checkpoint: CheckpointOption = None,
) -> None:
    """Write a checkpoint's model as DIR/model.jax (jax.export), DIR/params and a manifest."""
    from beagle.runner.export import export_run

    if out.exists() and not out.is_dir():
        raise _fail([f"--out {out} is a file, not a folder"], EXIT_INVALID)
    run = _load_run(spec, checkpoint)
    manifest = export_run(run, out)
    typer.echo(
        f"wrote {out}/model.jax, {out}/params and {out}/manifest.json "
        f"(step {manifest['checkpoint']['step']}, platforms {', '.join(manifest['platforms'])})"
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec, for editors."""
    from beagle import api

    typer.echo(json.dumps(api.schema(), indent=2, sort_keys=True))


def main() -> None:
    """Console-script entry point."""
    # `python -m beagle` and the console script both run from the user's folder, whose
    # packages a spec may name (as with `python -m`).
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    app()
