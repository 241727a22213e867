"""A model that draws on an RNG stream the spec does not name gets told which to add.

The new-user trial met flax's `InvalidRngError` under `model.input`; `beagle check` and
`beagle run` now point at `model` (or `model.rngs`) and name the stream flax asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from beagle.runner import run_spec, trace_spec
from beagle.spec import LoadedSpec, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]

DROPOUT = """\
version: 1
name: dropout
model:
  class: beagle.models:CNN
  args: {features: [4], num_classes: 10, dropout_rate: 0.5, batch_norm: false}
  input: batch.image
  outputs: logits
data: {source: digits, batch_size: 32}
optimizer: {name: adam, learning_rate: 0.001}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.logits, labels: batch.label}}
train: {epochs: 1}
"""


def test_check_points_a_dropout_model_without_rngs_at_model(tmp_path: Path) -> None:
    (tmp_path / "dropout.yaml").write_text(DROPOUT)
    result = subprocess.run(
        [sys.executable, "-m", "beagle", "check", "dropout.yaml"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines[0].startswith("dropout.yaml:3:1: model: the model draws on the RNG stream")
    assert "'dropout' in training mode" in lines[0] and "InvalidRngError" in lines[0]
    assert lines[1] == "  hint: add `rngs: [dropout]` under model"


def _load(tmp_path: Path, text: str) -> LoadedSpec:
    path = tmp_path / "dropout.yaml"
    path.write_text(text)
    loaded = load_spec(path, (), imports="import")
    assert isinstance(loaded, LoadedSpec)
    return loaded


def test_rngs_without_the_stream_the_model_asks_for_point_at_rngs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = _load(
        tmp_path, DROPOUT.replace("  outputs: logits", "  outputs: logits\n  rngs: [noise]")
    )
    (problem,) = trace_spec(loaded)
    assert problem.path == "model.rngs" and problem.hint == "add it: `rngs: [noise, dropout]`"
    with pytest.raises(SpecError) as error:  # run makes the same check on real arrays
        run_spec(loaded, progress=False)
    assert [(p.path, p.hint) for p in error.value.problems] == [(problem.path, problem.hint)]
    assert not (tmp_path / "runs").exists()


def test_a_spec_naming_the_stream_checks_clean(tmp_path: Path) -> None:
    text = DROPOUT.replace("  outputs: logits", "  outputs: logits\n  rngs: [dropout]")
    assert trace_spec(_load(tmp_path, text)) == []


NOISY = """\
import flax.linen as nn
import jax


class Noisy(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        if train:
            x = x + jax.random.normal(self.make_rng("jitter"), x.shape)
        return nn.Dense(1)(x)
"""

NOISY_SPEC = """\
version: 1
name: noisy
model: {class: "noisymod:Noisy"}
data: {source: synthetic, task: regression, examples: 64, features: 4, batch_size: 16}
optimizer: {name: sgd, learning_rate: 0.1}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 1}
"""


def test_the_hint_names_the_stream_flax_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "noisymod.py").write_text(NOISY)
    (problem,) = trace_spec(_load(tmp_path, NOISY_SPEC))
    assert problem.path == "model" and problem.hint == "add `rngs: [jitter]` under model"
