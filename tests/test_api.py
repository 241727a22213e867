"""`beagle.api` returns values and never prints: the CLI alone writes to the terminal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from beagle import api

SPEC = """\
version: 1
name: quiet
seed: 0
model:
  class: beagle.models:MLP
  args: {features: [8, 1]}
data:
  source: synthetic
  task: regression
  examples: 80
  features: 4
  batch_size: 16
optimizer: {name: adam, learning_rate: 0.01}
losses:
  mse: {fn: mse, args: {predictions: outputs.outputs, targets: batch.y}}
metrics:
  mae: {fn: mae, args: {predictions: outputs.outputs, targets: batch.y}}
train: {epochs: 2, batches_per_epoch: 4}
validation: {every: 1}
checkpoint: {every: 1}
log: {dir: runs/quiet, plot: false}
"""


def test_api_functions_never_write_to_stdout_or_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "quiet.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    capfd.readouterr()  # whatever came before this test

    assert api.check([spec]) == []
    report = api.generate([spec], tmp_path / "generated")
    assert report.written == [tmp_path / "generated" / "quiet.py"] and not report.problems
    result = api.run(spec)
    assert result.status == "done" and len(result.history["train_loss"]) == 2
    again = api.run(spec)  # already complete: said through `notify`, which is silent here
    assert again.status == "already_complete"

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
