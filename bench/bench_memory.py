"""Benchmark: peak memory (RSS) of `beagle run` against a bare hand-written loop.

Both train the same ~55M-parameter MLP (1000 -> 5000 -> 5000 -> 5000 -> 1, MSE, Adam:
params plus two Adam moments, ~0.66 GB of float32 state) on the same synthetic data for
the same steps, each as a whole process of its own; the peak resident set size of each
child comes from `os.wait4`. Target (issue 11, item 6): beagle / bare <= 1.15.

- `bare`: build the model and a flax `TrainState`, one jitted state-donating step over
  numpy batches, one float at the end.
- `beagle run`: the same model from a spec (no checkpoints, no plots), `--no-progress`.

    .venv/bin/python bench/bench_memory.py [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FEATURES = 1000
HIDDEN = [5000, 5000, 5000, 1]
BATCH = 32

BARE = """
import sys
import jax, numpy as np, optax
from flax.training.train_state import TrainState
from beagle.models import MLP

steps = int(sys.argv[1])
model = MLP(features={hidden})
rng = np.random.default_rng(0)
x = rng.normal(size=({batch}, {features})).astype(np.float32)
params = jax.jit(model.init)(jax.random.PRNGKey(0), x)["params"]
state = TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
del params

@jax.jit(donate_argnums=0)
def step(state, batch):
    def loss_fn(p):
        out = state.apply_fn({{"params": p}}, batch["x"])
        return optax.squared_error(out, batch["y"]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

for i in range(steps):
    xb = rng.normal(size=({batch}, {features})).astype(np.float32)
    state, loss = step(state, {{"x": xb, "y": xb.sum(axis=1, keepdims=True)}})
print(float(loss))
"""

SPEC = """
version: 1
name: memory_mlp
model:
  class: beagle.models:MLP
  args: {{features: {hidden}}}
data:
  source: synthetic
  task: regression
  features: {features}
  examples: {examples}
  val_fraction: 0.0
  batch_size: {batch}
optimizer: {{name: adam, learning_rate: 1.0e-3}}
losses:
  mse: {{fn: mse, args: {{predictions: outputs.outputs, targets: batch.y}}}}
train:
  epochs: 1
log: {{plot: false}}
"""


def peak_rss(command: list[str], cwd: Path) -> tuple[float, float]:
    """(peak RSS in GB, wall seconds) of one child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), BEAGLE_CACHE_DIR="off")
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        sys.exit(f"{' '.join(command)} failed:\n{errors.decode()[-2000:]}")
    return usage.ru_maxrss / 1e6, time.perf_counter() - started  # ru_maxrss is in KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps (default 8)")
    args = parser.parse_args()
    values = {"hidden": HIDDEN, "features": FEATURES, "batch": BATCH}
    params = sum(a * b + b for a, b in zip([FEATURES, *HIDDEN], HIDDEN, strict=False))
    print(f"MLP {FEATURES}->{'->'.join(map(str, HIDDEN))}: {params / 1e6:.1f}M parameters")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "bare.py").write_text(textwrap.dedent(BARE.format(**values)))
        spec = SPEC.format(examples=BATCH * args.steps, **values)
        (tmp / "memory_mlp.yaml").write_text(spec)
        bare, bare_s = peak_rss([sys.executable, "bare.py", str(args.steps)], tmp)
        run, run_s = peak_rss(
            [sys.executable, "-m", "beagle", "run", "memory_mlp.yaml", "--no-progress"], tmp
        )
    print(f"{'':12} {'peak RSS':>10} {'wall':>8}")
    print(f"{'bare':12} {bare:>8.2f}GB {bare_s:>7.1f}s")
    print(f"{'beagle run':12} {run:>8.2f}GB {run_s:>7.1f}s")
    print(f"beagle / bare: {run / bare:.2f}x (target <= 1.15)")


if __name__ == "__main__":
    main()
