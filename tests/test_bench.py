"""`make bench` cannot rot: `bench/bench_speed.py --quick` runs W0 and prints its table.

The smoke run is a real subprocess (real training, real `beagle run` processes); it checks
the table's shape and that every measured column holds a plausible number, not speed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
IN_PROCESS = ["bare", "naive", "train_loop", "train_loop auto", "keras fit", "keras fit spe"]
PROCESSES = ["bare script (process)", "beagle run (process)", "beagle run auto (process)"]
NUMBER = r"[0-9]+\.[0-9]+"


def env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), environment.get("PYTHONPATH", "")) if p
    )
    environment["JAX_PLATFORMS"] = "cpu"
    return environment


def test_quick_bench_prints_every_row_of_the_table(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    # Keras is a bench-only extra (absent from the test environment); `auto`'s trial
    # compiles and times three K in each of its two rows, which would double the time.
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_speed.py"),
            "--quick",
            "--workloads=W0",
            "--skip=keras,auto",
            "--no-pin",
            "--rounds=1",
            "--process-rounds=0",
            f"--json={results}",
        ],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,  # about 20 s on a quiet machine; minutes when six jobs share it
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^machine: .*CPUs", out, re.M), out
    assert re.search(r"^versions: jax \d", out, re.M), out
    assert re.search(r"^devices: \[CpuDevice.*not pinned \(--no-pin\)", out, re.M), out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("workload"))
    for column in ("steps/s", "ratio", "spread", "compile s", "import s", "RSS MiB", "first s"):
        assert column in lines[header]
    end = lines.index("", header)
    rows = [line for line in lines[header + 2 : end] if line.startswith("W0")]
    names = [re.split(r"\s{2,}", line[9:].strip())[0] for line in rows]
    assert [n.split("=")[0] for n in names] == IN_PROCESS + PROCESSES, out
    by_name = dict(zip(names, rows, strict=True))
    # in-process rows: steps/s, ratio to bare (bare itself 1.000), compile time, first run
    bare = by_name["bare"].split()
    assert float(bare[2]) > 0 and bare[3] == "1.000", by_name["bare"]
    for name in ("naive", "train_loop"):
        fields = by_name[name][9 + 28 :].split()
        assert re.fullmatch(NUMBER, fields[0]) and float(fields[1]) > 0, by_name[name]
    assert "skipped (--skip auto)" in by_name["train_loop auto"]
    assert "skipped (--skip auto)" in by_name["beagle run auto (process)"]
    assert "skipped (--skip keras)" in by_name["keras fit"]
    # process rows (first runs only with --process-rounds=0): compile s, import s, RSS MiB
    data = json.loads(results.read_text())["W0"]
    record = {row["variant"]: row for row in data}
    for name in ("bare script (process)", "beagle run (process)"):
        row = record[name]
        assert row["process"] and row["times"] == [], row
        assert 0 < row["compile_s"] < row["first_s"], row
        assert 0.2 < row["import_s"] < row["first_s"], row  # jax's import alone is more
        assert 50 < row["rss_mib"] < 4096, row
        fields = by_name[name][9 + 28 :].split()
        assert fields[:2] == ["-", "-"], by_name[name]  # no timed round: no steps/s, ratio
        assert [float(f) for f in fields[2:]] == [
            round(row[k], d)
            for k, d in (("compile_s", 2), ("import_s", 2), ("rss_mib", 0), ("first_s", 2))
        ]
    steps = 2 * 150  # W0 --quick: 2 epochs x 150 steps
    base = record["bare"]["times"]
    for name in ("bare", "naive", "train_loop"):
        row = record[name]
        assert len(row["times"]) == 1 and row["compile_s"] >= 0, row
        # ratio = bare's time / the row's in the same round; steps/s = steps / median time
        assert row["ratios"] == [b / t for b, t in zip(base, row["times"], strict=True)]
        fields = by_name[name][9 + 28 :].split()
        assert float(fields[0]) == round(steps / row["times"][0], 1), (fields, row)
        assert float(fields[1]) == round(row["ratios"][0], 3), (fields, row)


def test_pinning_holds_every_thread_and_the_subprocesses_to_one_core() -> None:
    script = (
        "import os, subprocess, sys, threading\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import bench_speed\n"
        "worker = threading.Event()\n"
        "thread = threading.Thread(target=worker.wait); thread.start()\n"
        "print(bench_speed.pin_to_one_core())\n"
        "tids = os.listdir('/proc/self/task')\n"
        "print(sorted({len(os.sched_getaffinity(int(t))) for t in tids}))\n"
        "child = 'import os; print(len(os.sched_getaffinity(0)))'\n"
        "done = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True)\n"
        "print(done.stdout)\n"
        "worker.set(); thread.join()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(BENCH)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    said, threads, child = done.stdout.splitlines()[:3]
    assert re.fullmatch(r"pinned to CPU \d+ \(of \d+ allowed\); subprocesses inherit it", said)
    assert threads == "[1]" and child.strip() == "1", done.stdout


def test_auto_row_is_refused_by_the_spec_or_trains_and_reports_its_k(tmp_path: Path) -> None:
    """The `auto` row's spec asks for `auto`: refused until it lands, then it trains."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_speed
        from speed_workloads import WORKLOADS
    finally:
        sys.path.remove(str(BENCH))
    setup = bench_speed.prepare(WORKLOADS["W0"], True, tmp_path / "W0", env())
    row, spec = bench_speed.beagle_rows(setup, auto=True)
    assert "steps_per_call: auto" in spec.read_text()
    if row.run is None:
        assert row.why_not.startswith("n/a: the spec refuses auto ("), row.why_not
        assert "steps_per_call" in row.why_not
    else:
        row.run(True)
        assert row.chosen and all(k >= 1 for k in row.chosen), row
