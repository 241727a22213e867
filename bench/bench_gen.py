"""Benchmark: the whole-process time of `beagle gen` on one spec, relative to `import jax`.

Both commands run as fresh processes, interleaved over several rounds (so that a noisy
moment on the machine hits both), and the medians are compared. Target: the ratio
`beagle gen` / `import jax` at most 0.6 (`beagle gen` never imports jax, flax, optax or
orbax, and imports the rest lazily).

    python bench/bench_gen.py [--rounds 9] [--spec specs/digits_cnn.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.6


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spec", default="specs/digits_cnn.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        gen = [sys.executable, "-m", "beagle", "gen", "--out", out, args.spec]
        jax = [sys.executable, "-c", "import jax"]
        wall_time(gen), wall_time(jax)  # warm the file-system cache and .pyc files
        gen_times, jax_times = [], []
        for _ in range(args.rounds):
            gen_times.append(wall_time(gen))
            jax_times.append(wall_time(jax))
    gen_median, jax_median = statistics.median(gen_times), statistics.median(jax_times)
    ratio = gen_median / jax_median
    print(f"beagle gen {args.spec}: median {gen_median * 1000:.0f} ms over {args.rounds} runs")
    print(f"python -c 'import jax': median {jax_median * 1000:.0f} ms over {args.rounds} runs")
    verdict = "ok" if ratio <= TARGET else "over target"
    print(f"ratio {ratio:.2f} (target <= {TARGET}): {verdict}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
