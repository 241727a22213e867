"""Benchmark: time to first step of `beagle run`, cold and warm (JAX's persistent cache).

For each spec, `beagle run` runs as a whole process twice with the same
`BEAGLE_CACHE_DIR` (a fresh folder): cold (the cache empty), then warm (`--restart`, every
program from the cache). A small wrapper starts the CLI in the child and notes when the
first training step's outputs are ready (it waits for that one step only); the time is
counted from the moment the parent starts the child. Also printed: the whole run's wall
time, and `import jax, flax, optax` alone as a floor.

Specs: W0 (logistic regression: 8 features, batch 32; one epoch of 1,638 steps) and the
demo, `specs/digits_cnn.yaml` (one epoch).

    .venv/bin/python bench/bench_startup.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child_env import child_env

ROOT = Path(__file__).resolve().parents[1]

W0 = """\
version: 1
name: w0
model: {class: beagle.models:MLP, args: {features: [2]}}
data:
  source: synthetic
  task: classification
  classes: 2
  features: 8
  examples: 65520
  batch_size: 32
optimizer: {name: sgd, learning_rate: 0.1}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
train: {epochs: 1}
log: {plot: false}
"""

# Runs the CLI; writes the wall-clock time at which the first step's outputs were ready.
WRAPPER = """\
import sys, time
import beagle.training

first_file = sys.argv.pop(1)
train_loop = beagle.training.train_loop

def timed_loop(*args, **kwargs):
    step = kwargs["train_step_fn"]
    seen = []

    def first_step(*step_args):
        out = step(*step_args)
        if not seen:
            import jax
            jax.block_until_ready(out)
            seen.append(time.time())
            with open(first_file, "w") as f:
                f.write(repr(seen[0]))
        return out

    kwargs["train_step_fn"] = first_step
    return train_loop(*args, **kwargs)

beagle.training.train_loop = timed_loop
from beagle.cli import main
sys.argv[0] = "beagle"
main()
"""


def timed(
    command: list[str], cwd: Path, env: dict[str, str], cache: Path, first_file: Path
) -> tuple[float, float]:
    """(time to first step, whole run) in seconds, of one child process."""
    env = dict(env, BEAGLE_CACHE_DIR=str(cache))
    started = time.time()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    total = time.time() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return float(first_file.read_text()) - started, total


def floor(cwd: Path, env: dict[str, str]) -> float:
    started = time.time()
    subprocess.run([sys.executable, "-c", "import jax, flax, optax"], cwd=cwd, env=env, check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="cold+warm pairs (median)")
    args = parser.parse_args()
    env = child_env()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "w0.yaml").write_text(W0)
        shutil.copy(ROOT / "specs" / "digits_cnn.yaml", tmp / "digits_cnn.yaml")
        (tmp / "wrapper.py").write_text(WRAPPER)
        first_file = tmp / "first_step"
        print(f"{'spec':12} {'TTFS cold':>10} {'TTFS warm':>10} {'run cold':>9} {'run warm':>9}")
        for spec in ("w0.yaml", "digits_cnn.yaml"):
            rows: list[tuple[float, float, float, float]] = []
            for repeat in range(args.repeats):
                cache = tmp / f"cache-{spec}-{repeat}"
                command = [
                    sys.executable,
                    "wrapper.py",
                    str(first_file),
                    "run",
                    spec,
                    "--no-progress",
                    "--restart",
                    "--set",
                    "train.epochs=1",
                ]
                cold = timed(command, tmp, env, cache, first_file)
                warm = timed(command, tmp, env, cache, first_file)
                rows.append((cold[0], warm[0], cold[1], warm[1]))
            medians = [statistics.median(column) for column in zip(*rows, strict=True)]
            print(
                f"{spec.removesuffix('.yaml'):12} "
                + " ".join(f"{value:>9.2f}s" for value in medians[:2])
                + " "
                + " ".join(f"{value:>8.2f}s" for value in medians[2:])
            )
        floors = [floor(tmp, env) for _ in range(args.repeats + 1)][1:]  # the first warms the disk
        print(f"a process that only imports jax, flax, optax: {statistics.median(floors):.2f}s")


if __name__ == "__main__":
    main()
