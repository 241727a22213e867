"""Warm starts: `beagle run` keeps every compiled program in JAX's persistent cache, and a
repeated run compiles nothing new; importing beagle's runtime turns nothing on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
version: 1
name: cached
model: {class: beagle.models:MLP, args: {features: [16, 1]}}
data: {source: synthetic, task: regression, examples: 256, features: 4, batch_size: 32}
optimizer: {name: adam, learning_rate: 0.01}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 2}
checkpoint: {every: 1}
log: {plot: false}
"""


def run(
    folder: Path, cache: Path, *args: str, log_compiles: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["BEAGLE_CACHE_DIR"] = str(cache)
    if log_compiles:
        env["JAX_LOG_COMPILES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "beagle", "run", "spec.yaml", "--no-progress", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_repeated_run_compiles_nothing_new(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    cache = tmp_path / "cache"
    first = run(tmp_path, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = sorted(p.name for p in cache.iterdir())
    assert len(kept) >= 3  # the step, init, and beagle's own small programs
    # beside it, the generated module, read again by a repeated run (no jinja2, no black)
    (module,) = (tmp_path / "cache-modules").iterdir()
    assert module.read_text() == (tmp_path / "runs" / "cached" / "cached.py").read_text()
    again = run(tmp_path, cache, "--restart", log_compiles=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in cache.iterdir()) == kept  # every program came from it
    # JAX logs each program it gets ("Finished XLA compilation"), and each cache hit
    programs = re.findall(r"Finished XLA compilation of (\S+)", again.stderr)
    hits = re.findall(r"Persistent compilation cache hit for '(\S+)'", again.stderr)
    assert programs and len(hits) == len(programs), (programs, hits)


def test_the_cache_can_be_turned_off_and_the_runtime_sets_nothing(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    done = run(tmp_path, Path("off"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "off").exists()
    code = "import beagle.training, jax; print(jax.config.jax_compilation_cache_dir)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "None"
