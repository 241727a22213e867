"""Benchmark: beagle against a bare jitted loop and Keras 3, same run, same workloads.

`make bench` runs this script; `docs/performance.md` says what each row means and holds
the figures. Workloads (`speed_workloads.py`): W0 logistic regression (batch 32), W1 MLP
64-256-256-1 (batch 128), W2 CNN with BatchNorm on 28x28x1 (batch 64, validation).

Rows, in one process unless marked (process):
- `bare`: a hand-written jitted step over prebuilt device batches, one float per epoch
  (`bare_loop.py`): the baseline of the in-process rows.
- `naive`: the same loop fetching every metric after every step.
- `train_loop`, `train_loop auto`: the spec's generated module (default `steps_per_call`,
  and `auto`), its steps driven by `beagle.training.train_loop` over the same batches.
- `keras fit`, `keras fit spe=K`: Keras 3 `model.fit` on JAX, same layers and batch, with
  default settings and with `steps_per_execution=K` (K as `auto` chose, else 32 for W0
  and 8 otherwise).
- `bare script (process)`: `bare_loop.py` as a whole process reading the .npz files:
  the baseline of the process rows.
- `beagle run (process)`, `beagle run auto (process)`: `python -m beagle run` on the spec,
  a whole process, with a warm persistent compilation cache (the first run fills it).

Every variant runs once untimed first (it compiles; compile and import times and peak RSS
come from that run). Then each round runs every variant once, interleaved, the order
rotated each round; each round gives paired ratios `baseline time / variant time` (steps/s
relative to bare), reported as the median and the spread (min-max) over the rounds. On a
CPU the process (and every subprocess) is pinned to one core unless `--no-pin`.

    python bench/bench_speed.py [--quick] [--workloads W0,W1,W2] [--rounds N]
        [--device auto|cpu|gpu] [--no-pin] [--skip keras,process,auto] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from child_env import child_env  # noqa: E402
from speed_workloads import (  # noqa: E402
    WORKLOADS,
    Size,
    Workload,
    make_arrays,
    spec_text,
    write_npz,
)

IN_PROCESS_BASE = "bare"
PROCESS_BASE = "bare script (process)"
KERAS_SPE = "keras fit spe"  # the row is named "keras fit spe=K"
# (workload, row, baseline row or None for bare, target, what the target is)
TARGETS: list[tuple[str, str, str | None, float, str]] = [
    ("W1", "train_loop", None, 0.97, "beagle default / bare, train_loop, W1"),
    ("W2", "train_loop", None, 0.97, "beagle default / bare, train_loop, W2"),
    ("W1", "train_loop auto", None, 1.1, "auto / bare, W1"),
    ("W0", "train_loop auto", None, 2.0, "auto / bare, W0"),
    ("W2", "train_loop auto", None, 0.97, "auto / bare, W2, whole run (trial included)"),
    ("W1", "train_loop auto", "keras fit", 1.1, "auto / Keras default fit, W1"),
    ("W1", "train_loop auto", "keras fit spe", 1.0, "auto / Keras, same steps_per_execution, W1"),
    ("W0", "beagle run (process)", None, 0.5, "W0 plain script / beagle run, warm cache"),
]


@dataclass
class Sample:
    """What one run of a process row measured beside its time (None in-process)."""

    rss_mib: float | None = None
    compile_s: float | None = None
    import_s: float | None = None
    seconds: float | None = None  # the process's own wall time, from its launcher


IN_PROCESS = Sample()


@dataclass
class Row:
    """One variant of a workload: how to run it once, and what was measured."""

    name: str
    process: bool = False
    run: Callable[[bool], Sample] | None = None  # its argument: this is the first run
    why_not: str = ""  # set when the row cannot run (n/a)
    compile_s: float | None = None
    import_s: float | None = None
    rss_mib: float | None = None
    first_s: float | None = None  # the untimed first run (cold caches)
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)  # the K that `auto` chose, each run


# XLA compilation time in this process, summed from jax.monitoring's backend-compile events
# (the time `JAX_LOG_COMPILES=1` logs as "Finished XLA compilation", as the issue measured).
COMPILE_SECONDS = [0.0]


def listen_to_compiles() -> None:
    import jax.monitoring

    def on_duration(event: str, duration: float, **_: Any) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            COMPILE_SECONDS[0] += duration

    jax.monitoring.register_event_duration_secs_listener(on_duration)


def pin_to_one_core() -> str:
    """Pin every thread of this process (and so every later subprocess) to one core."""
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1]
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), {core})
        except OSError:  # a thread that ended meanwhile
            pass
    return f"pinned to CPU {core} (of {len(allowed)} allowed); subprocesses inherit it"


def versions() -> str:
    from importlib import metadata

    names = ["jax", "jaxlib", "flax", "optax", "numpy", "keras"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average {load}"
    )


# ---------------------------------------------------------------------------------------
# Subprocess rows


_COMPILE_LINE = re.compile(r"Finished XLA compilation of .* in ([0-9.e-]+) sec")
_IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")


def run_process(
    command: list[str], env: dict[str, str], cwd: Path, instrument: bool
) -> tuple[float, float, float | None, float | None]:
    """Run a whole process: (seconds, its peak RSS in MiB, compile s, import s).

    The process starts from `peak_rss.py`, which times it and reports its own peak RSS.
    With `instrument`, it runs under `-X importtime` and `JAX_LOG_COMPILES=1`: import time
    is the sum of the top-level imports' cumulative times (lazy imports included), compile
    time the sum of the XLA compilation times in JAX's log.
    """
    env = dict(env)
    if instrument:
        command = [command[0], "-X", "importtime", *command[1:]]
        env["JAX_LOG_COMPILES"] = "1"
    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "result.json"
        launcher = [sys.executable, str(HERE / "peak_rss.py"), str(record)]
        done = subprocess.run([*launcher, *command], cwd=cwd, env=env, capture_output=True)
        stdout = done.stdout.decode(errors="replace")
        stderr = done.stderr.decode(errors="replace")
        result = json.loads(record.read_text()) if record.exists() else {"returncode": -1}
    if done.returncode or result["returncode"]:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} exited {result['returncode']}:\n{tail}")
    compile_s = import_s = None
    if instrument:
        compile_s = sum(float(m.group(1)) for m in _COMPILE_LINE.finditer(stderr))
        import_s = 0.0
        for line in stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match:
                import_s += int(match.group(1)) / 1e6
    return result["seconds"], result["maxrss_kib"] / 1024, compile_s, import_s


# ---------------------------------------------------------------------------------------
# The rows of one workload


@dataclass
class Setup:
    """What the rows of one workload share."""

    w: Workload
    size: Size
    folder: Path
    train: dict[str, Any]  # NumPy arrays
    val: dict[str, Any] | None
    train_path: Path
    val_path: Path | None
    env: dict[str, str]


def prepare(w: Workload, quick: bool, folder: Path, env: dict[str, str]) -> Setup:
    size = w.quick if quick else w.full
    folder.mkdir(parents=True)
    train = make_arrays(w.name, size.steps * w.batch, seed=0)
    val = make_arrays(w.name, size.val_batches * w.batch, seed=1) if size.val_batches else None
    train_path = write_npz(folder / "train.npz", train)
    val_path = write_npz(folder / "val.npz", val) if val is not None else None
    return Setup(w, size, folder, train, val, train_path, val_path, env)


def write_spec(s: Setup, steps_per_call: int | str | None, tag: str) -> Path:
    path = s.folder / f"{tag}.yaml"
    path.write_text(
        spec_text(s.w, s.size, s.train_path, s.val_path, s.folder / tag, steps_per_call)
    )
    return path


def batch_list(arrays: dict[str, Any], batch: int, count: int) -> list[dict[str, Any]]:
    return [{k: v[i * batch : (i + 1) * batch] for k, v in arrays.items()} for i in range(count)]


def bare_rows(s: Setup) -> list[Row]:
    import jax
    from bare_loop import make_state, run_bare

    name, size = s.w.name, s.size
    batches = jax.device_put(batch_list(s.train, s.w.batch, size.steps))
    val = jax.device_put(batch_list(s.val, s.w.batch, size.val_batches)) if s.val else []
    state = make_state(name)

    def bare(first: bool) -> Sample:
        run_bare(name, state, batches, size.epochs, val)
        return IN_PROCESS

    def naive(first: bool) -> Sample:
        run_bare(name, state, batches, size.epochs, val, naive=True)
        return IN_PROCESS

    return [Row(IN_PROCESS_BASE, run=bare), Row("naive", run=naive)]


def auto_options(module: Any, chosen: list[int]) -> dict[str, Any] | None:
    """`train_loop`'s options for `auto` (None when it takes no single step), the choice
    appended to `chosen` where `train_loop` reports it."""
    from beagle.training import train_loop

    parameters = inspect.signature(train_loop).parameters
    if "one_step_fn" not in parameters:
        return None
    options: dict[str, Any] = {"steps_per_call": "auto", "one_step_fn": module.train_one_step}
    if "on_steps_per_call" in parameters:
        options["on_steps_per_call"] = lambda choice: chosen.append(choice.steps_per_call)
    return options


def beagle_rows(s: Setup, auto: bool) -> tuple[Row, Path]:
    """`train_loop` over the generated module's steps (the spec's default K, or `auto`)."""
    import jax

    from beagle.compiler import compile_spec
    from beagle.runner import trace, wiring
    from beagle.spec import SpecError, load_spec
    from beagle.training import train_loop

    label = "train_loop auto" if auto else "train_loop"
    spec = write_spec(s, "auto" if auto else None, "auto" if auto else "default")
    try:
        loaded = load_spec(spec, (), imports="import")
    except SpecError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "a SpecError"
        return Row(label, why_not=f"n/a: the spec refuses auto ({first.split(': ', 1)[-1]})"), spec
    text = compile_spec(loaded.spec, loaded.source_name)
    module = wiring.import_module_from_text(text, f"_bench_{loaded.spec.name}", "<bench>")
    wired = trace.wire(loaded, module)
    options: dict[str, Any] = {}
    row = Row(label)
    if auto:
        found = auto_options(module, row.chosen)
        if found is None:
            return Row(label, why_not="n/a: train_loop takes no one_step_fn"), spec
        options = found
    size = s.size
    batches = jax.device_put(batch_list(s.train, s.w.batch, size.steps))
    val = jax.device_put(batch_list(s.val, s.w.batch, size.val_batches)) if s.val else None

    def run(first: bool) -> Sample:
        state, _ = train_loop(
            wired.state,
            module.train_step,
            lambda: iter(batches),
            size.epochs,
            size.steps,
            wired.rng_key,
            val_step_fn=module.val_step if val else None,
            val_data_iterator=(lambda: iter(val)) if val else None,
            val_num_batches=len(val) if val else None,
            show_progress=False,
            **options,
        )
        jax.block_until_ready(state)
        return IN_PROCESS

    row.run = run
    return row, spec


def keras_rows(s: Setup, spe: int) -> list[Row]:
    try:
        from keras_fit import build, fit, import_keras

        keras, import_s = import_keras()
    except ImportError as error:
        why = f"n/a: no keras ({error}); pip install -e '.[bench]'"
        return [Row("keras fit", why_not=why), Row(f"{KERAS_SPE}={spe}", why_not=why)]
    rows = []
    for k, label in ((1, "keras fit"), (spe, f"{KERAS_SPE}={spe}")):
        model = build(keras, s.w.name, k)

        def run(first: bool, model: Any = model) -> Sample:
            fit(model, s.train, s.val, s.w.batch, s.size.epochs)
            return IN_PROCESS

        rows.append(Row(label, run=run, import_s=import_s))
    return rows


def process_rows(s: Setup, specs: dict[str, Path | None]) -> list[Row]:
    python = sys.executable
    size = s.size
    bare = [
        python,
        str(HERE / "bare_loop.py"),
        s.w.name,
        str(s.train_path),
        *(["--val", str(s.val_path)] if s.val_path else []),
        f"--epochs={size.epochs}",
        f"--steps={size.steps}",
        f"--batch={s.w.batch}",
    ]
    base = Row(PROCESS_BASE, process=True)
    base.run = _process_runner(bare, s, base, None)
    rows = [base]
    for label, spec in specs.items():
        if spec is None:
            rows.append(Row(label, process=True, why_not="n/a: the spec refuses auto (above)"))
            continue
        command = [python, "-m", "beagle", "run", str(spec), "--no-progress", "--restart"]
        row = Row(label, process=True)
        row.run = _process_runner(command, s, row, s.folder / spec.stem)
        rows.append(row)
    return rows


def _process_runner(
    command: list[str], s: Setup, row: Row, run_folder: Path | None
) -> Callable[[bool], Sample]:
    def run(first: bool) -> Sample:
        seconds, rss, compile_s, import_s = run_process(command, s.env, s.folder, first)
        k = None if run_folder is None else chosen_k(run_folder)
        if k is not None:
            row.chosen.append(k)
        return Sample(rss, compile_s, import_s, seconds)

    return run


def chosen_k(run_folder: Path) -> int | None:
    """The K that `beagle run` with `auto` recorded in its run folder's run.json, if any."""
    record = run_folder / "run.json"
    if not record.exists():
        return None
    found: list[int] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if "steps_per_call" in str(key) and isinstance(item, int) and item >= 1:
                    found.append(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(record.read_text()))
    return found[0] if found else None


# ---------------------------------------------------------------------------------------
# Measuring


def first_run(row: Row) -> None:
    """The untimed first run: compiles; gives compile and import times and peak RSS."""
    assert row.run is not None
    COMPILE_SECONDS[0] = 0.0
    started = time.perf_counter()
    sample = row.run(True)
    row.first_s = sample.seconds if sample.seconds is not None else time.perf_counter() - started
    if row.process:
        row.compile_s, row.import_s, row.rss_mib = sample.compile_s, sample.import_s, sample.rss_mib
    else:
        row.compile_s = COMPILE_SECONDS[0]


def timed_rounds(rows: list[Row], rounds: int) -> None:
    """`rounds` rounds, each running every row once, the order rotated each round."""
    runnable = [row for row in rows if row.run is not None]
    for r in range(rounds):
        shift = r % len(runnable)
        for row in runnable[shift:] + runnable[:shift]:
            assert row.run is not None
            started = time.perf_counter()
            sample = row.run(False)
            elapsed = time.perf_counter() - started
            row.times.append(sample.seconds if sample.seconds is not None else elapsed)
            if sample.rss_mib is not None:
                row.rss_mib = max(row.rss_mib or 0.0, sample.rss_mib)


def pair(rows: list[Row], base: str) -> None:
    """Each row's per-round ratios: the baseline's time / the row's, in the same round."""
    baseline = next(row for row in rows if row.name == base)
    for row in rows:
        row.ratios = [b / t for b, t in zip(baseline.times, row.times, strict=False)]


def measure(
    s: Setup, rounds: int, process_rounds: int, skip: set[str], log: Callable[[str], None]
) -> list[Row]:
    rows = bare_rows(s)
    default, default_spec = beagle_rows(s, auto=False)
    if "auto" in skip:
        auto, auto_spec = Row("train_loop auto", why_not="skipped (--skip auto)"), None
    else:
        auto, auto_spec = beagle_rows(s, auto=True)
    rows += [default, auto]
    refused = auto.why_not.startswith("n/a: the spec refuses")
    processes: list[Row] = [
        Row(name, process=True, why_not="skipped (--skip process)")
        for name in (PROCESS_BASE, "beagle run (process)", "beagle run auto (process)")
    ]
    if "process" not in skip:
        processes = process_rows(
            s,
            {
                "beagle run (process)": default_spec,
                "beagle run auto (process)": None if refused else auto_spec,
            },
        )
        if auto_spec is None:
            processes[-1] = Row(processes[-1].name, process=True, why_not=auto.why_not)
    for row in rows + processes:
        if row.run is not None:
            log(f"{s.w.name}: first run of {row.name}")
            first_run(row)
    chosen = auto.chosen + next(r.chosen for r in processes if r.name.startswith("beagle run a"))
    k = chosen[0] if chosen else (32 if s.w.name == "W0" else 8)
    if "keras" in skip:
        rows += [Row(name, why_not="skipped (--skip keras)") for name in ("keras fit", KERAS_SPE)]
    else:
        for row in keras_rows(s, k):
            rows.append(row)
            if row.run is not None:
                log(f"{s.w.name}: first run of {row.name}")
                first_run(row)
    log(f"{s.w.name}: {rounds} rounds in-process, {process_rounds} rounds of processes")
    timed_rounds(rows, rounds)
    pair(rows, IN_PROCESS_BASE)
    if any(row.run is not None for row in processes):
        timed_rounds(processes, process_rounds)
        pair(processes, PROCESS_BASE)
    return rows + processes


# ---------------------------------------------------------------------------------------
# Reporting


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else ""


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


HEADER = (
    f"{'workload':<9}{'variant':<28}{'steps/s':>10}{'ratio':>8}  {'spread':<13}"
    f"{'compile s':>10}{'import s':>9}{'RSS MiB':>9}{'first s':>9}"
)


def table(results: dict[str, list[Row]], sizes: dict[str, Size]) -> list[str]:
    lines = [HEADER, "-" * len(HEADER)]
    for name, rows in results.items():
        steps = sizes[name].steps * sizes[name].epochs
        for row in rows:
            if row.run is None:
                lines.append(f"{name:<9}{row.name:<28}{row.why_not}")
                continue
            rate = steps / statistics.median(row.times) if row.times else None
            ratio = statistics.median(row.ratios) if row.ratios else None
            lines.append(
                f"{name:<9}{row.name:<28}{fmt(rate, 1):>10}{fmt(ratio, 3):>8}  "
                f"{spread(row.ratios):<13}{fmt(row.compile_s, 2):>10}{fmt(row.import_s, 2):>9}"
                f"{fmt(row.rss_mib, 0):>9}{fmt(row.first_s, 2):>9}"
            )
    return lines


def target_lines(results: dict[str, list[Row]]) -> tuple[list[str], bool]:
    lines, ok = [], True
    for name, label, base, target, what in TARGETS:
        rows = results.get(name, [])
        row = next((r for r in rows if r.name == label), None)
        other = None
        if base is not None:  # "keras fit spe" names the row "keras fit spe=K"
            other = next(
                (r for r in rows if r.name in (base, f"{base}=") or r.name.startswith(f"{base}=")),
                None,
            )
        missing = row is None or row.run is None or not row.times
        if base is not None:
            missing = missing or other is None or other.run is None or not other.times
        if missing:
            if name in results:
                lines.append(f"  {what:<48} >= {target:<5} n/a")
            continue
        assert row is not None
        if other is None:
            ratios = row.ratios
        else:
            ratios = [b / a for a, b in zip(row.times, other.times, strict=False)]
        value = statistics.median(ratios)
        passed = value >= target
        ok &= passed
        lines.append(
            f"  {what:<48} >= {target:<5} {value:.3f} ({spread(ratios)})"
            f" {'ok' if passed else 'MISSED'}"
        )
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (targets not enforced)"
    )
    parser.add_argument("--workloads", default="W0,W1,W2", help="comma-separated: W0,W1,W2")
    parser.add_argument("--rounds", type=int, help="in-process rounds (default 7; quick 2)")
    parser.add_argument(
        "--process-rounds",
        type=int,
        help="rounds of the process rows (default 3; quick 1; 0: the first runs only)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core on a CPU")
    parser.add_argument("--skip", default="", help="comma-separated: keras, process, auto")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown_skips = skip - {"keras", "process", "auto"}
    if unknown_skips:
        parser.error(f"--skip takes keras, process and auto, not {sorted(unknown_skips)}")
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    elif args.device == "gpu":
        os.environ["JAX_PLATFORMS"] = "cuda"
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
    process_rounds = args.process_rounds
    if process_rounds is None:
        process_rounds = 1 if args.quick else 3

    # On a GPU, leave room for the process rows' own JAX processes beside this one.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")
    started = time.perf_counter()
    import jax

    import_jax_s = time.perf_counter() - started
    listen_to_compiles()
    backend = jax.default_backend()
    pinning = "not pinned (--no-pin)" if args.no_pin else "not pinned (the backend is not a CPU)"
    if backend == "cpu" and not args.no_pin:
        pinning = pin_to_one_core()
    print(f"bench_speed: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"devices: {jax.devices()} (backend {backend}); {pinning}")
    print(
        f"import jax: {import_jax_s:.2f} s; {rounds} in-process rounds, {process_rounds} "
        f"process rounds{' (--quick: a smoke run)' if args.quick else ''}"
    )
    sys.stdout.flush()

    def log(message: str) -> None:
        print(f"  [{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    results: dict[str, list[Row]] = {}
    sizes: dict[str, Size] = {}
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as scratch:
        env = child_env(BEAGLE_CACHE_DIR=str(Path(scratch) / "jax_cache"))
        for name in names:
            w = WORKLOADS[name]
            s = prepare(w, args.quick, Path(scratch) / name, env)
            sizes[name] = s.size
            results[name] = measure(s, rounds, process_rounds, skip, log)
    print()
    for name in names:
        size = sizes[name]
        val = f", {size.val_batches} validation batches an epoch" if size.val_batches else ""
        print(f"{name}: {WORKLOADS[name].title}; {size.epochs} epochs x {size.steps} steps{val}")
    print()
    for line in table(results, sizes):
        print(line)
    print()
    print("ratio: median over the rounds of baseline time / variant time in the same round")
    print(f"(steps/s relative to the baseline): `{IN_PROCESS_BASE}` for the in-process rows,")
    print(f"`{PROCESS_BASE}` for the (process) rows; spread: min-max over the rounds.")
    print("compile s, import s, RSS MiB: from the first (cold) run; RSS: the process's peak.")
    for name, rows in results.items():
        for row in rows:
            if row.chosen:
                print(f"{name} {row.name}: auto chose steps_per_call {row.chosen} (each run)")
    print()
    lines, ok = target_lines(results)
    print("targets (the issue's, on this machine's CPU):")
    for line in lines:
        print(line)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    name: [
                        {
                            "variant": row.name,
                            "process": row.process,
                            "why_not": row.why_not,
                            "times": row.times,
                            "ratios": row.ratios,
                            "compile_s": row.compile_s,
                            "import_s": row.import_s,
                            "rss_mib": row.rss_mib,
                            "first_s": row.first_s,
                            "auto_chose": row.chosen,
                        }
                        for row in rows
                    ]
                    for name, rows in results.items()
                },
                indent=1,
            )
        )
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
