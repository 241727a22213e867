"""`--set KEY=VALUE` overrides: YAML 1.2 values by dotted path, sections created, unknown
paths named with the closest valid ones, results validated like the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from beagle.spec import SpecError, load_spec
from beagle.spec.overrides import parse_override, valid_paths

VALID = """\
version: 1
name: tiny
model:
  class: beagle.models:MLP
  args: {features: [16, 1]}   # widths
  outputs: predictions
data:
  source: synthetic
  task: regression
  batch_size: 32
optimizer:
  name: adam
  learning_rate: 1e-3
losses:
  mse:
    fn: mse
    args: {predictions: outputs.predictions, targets: batch.y}
train:
  epochs: 2
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(VALID)
    return path


def _problems(spec_file: Path, *overrides: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file, overrides, imports="none")
    return [str(p) for p in caught.value.problems]


def test_value_is_yaml_12(spec_file: Path) -> None:
    loaded = load_spec(spec_file, ["optimizer.learning_rate=3e-4"], imports="none")
    assert loaded.spec.optimizer.learning_rate == pytest.approx(3e-4)
    assert type(loaded.spec.optimizer.learning_rate) is float


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("train.epochs=1_0", "expected an integer, got '1_0'"),
        ("seed=0b11", "expected an integer, got '0b11'"),
        ("optimizer.learning_rate=1_0e-3", "got '1_0e-3'"),
    ],
)
def test_yaml_11_numbers_in_overrides_are_strings(spec_file: Path, arg: str, message: str) -> None:
    [problem] = _problems(spec_file, arg)
    assert problem.startswith(f"--set {arg}: ") and message in problem


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("a=1", 1),
        ("a=1e-3", 1e-3),
        ("a=[32, 32]", [32, 32]),
        ("a={x: 1}", {"x": 1}),
        ("a=null", None),
        ("a='3'", "3"),
        ("a=yes", "yes"),
        ("a=x=y", "x=y"),
    ],
)
def test_parse_override(arg: str, value: object) -> None:
    path, parsed = parse_override(arg)
    assert path == ("a",)
    assert parsed == value


def test_text_is_the_spec_as_run_with_comments_kept(spec_file: Path) -> None:
    loaded = load_spec(
        spec_file, ["train.epochs=7", "model.args.features=[8, 8, 1]"], imports="none"
    )
    assert loaded.spec.train.epochs == 7
    assert "epochs: 7" in loaded.text
    assert "# widths" in loaded.text
    reloaded_path = spec_file.with_name("as_run.yaml")
    reloaded_path.write_text(loaded.text)
    assert load_spec(reloaded_path, imports="none").spec == loaded.spec
    assert loaded.hash != load_spec(spec_file, imports="none").hash


def test_overrides_apply_in_order(spec_file: Path) -> None:
    loaded = load_spec(spec_file, ["train.epochs=7", "train.epochs=9"], imports="none")
    assert loaded.spec.train.epochs == 9


def test_path_into_a_missing_section_creates_it(spec_file: Path) -> None:
    loaded = load_spec(
        spec_file,
        ["checkpoint.every=2", "checkpoint.best.metric=train_loss", "checkpoint.best.mode=min"],
        imports="none",
    )
    assert loaded.spec.checkpoint is not None
    assert loaded.spec.checkpoint.every == 2
    assert loaded.spec.checkpoint.best is not None
    assert loaded.spec.checkpoint.best.metric == "train_loss"


def test_new_loss_term_by_path(spec_file: Path) -> None:
    loaded = load_spec(
        spec_file,
        ["losses.l1.fn=mae", "losses.l1.args={predictions: outputs.predictions, targets: batch.y}"],
        imports="none",
    )
    assert list(loaded.spec.losses) == ["mse", "l1"]


def test_unknown_path_names_the_closest_valid_path(spec_file: Path) -> None:
    assert _problems(spec_file, "optimizer.learnig_rate=1") == [
        "--set optimizer.learnig_rate=1: optimizer.learnig_rate: unknown key 'learnig_rate' in "
        "'optimizer'\n  hint: did you mean 'optimizer.learning_rate'?"
    ]
    assert _problems(spec_file, "trian.epochs=2") == [
        "--set trian.epochs=2: trian.epochs: unknown key 'trian'\n"
        "  hint: did you mean 'train.epochs'?"
    ]


def test_abbreviated_key_suggests_the_full_name(spec_file: Path) -> None:
    [problem] = _problems(spec_file, "optimizer.lr=1")
    assert problem.endswith("hint: did you mean 'optimizer.learning_rate'?")


def test_unknown_path_with_nothing_close_lists_the_valid_keys(spec_file: Path) -> None:
    [problem] = _problems(spec_file, "train.zzz=1")
    assert problem.endswith(
        "hint: valid keys under 'train': 'epochs', 'batches_per_epoch', 'steps_per_call', 'nan'"
    )


def test_overridden_value_is_validated_and_points_at_the_override(spec_file: Path) -> None:
    assert _problems(spec_file, "train.epochs=0") == [
        "--set train.epochs=0: train.epochs: must be at least 1, got 0"
    ]
    assert _problems(spec_file, "losses.mse.weight=high") == [
        "--set losses.mse.weight=high: losses.mse.weight: expected a number, got 'high'"
    ]


def test_file_and_override_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(VALID.replace("batch_size: 32", "batch_size: 0"))
    problems = _problems(path, "train.epochs=-1")
    assert problems == [
        f"{path}:10:15: data.batch_size: must be at least 1, got 0",
        "--set train.epochs=-1: train.epochs: must be at least 1, got -1",
    ]


def test_a_missing_key_in_a_created_section_points_at_the_override(spec_file: Path) -> None:
    assert _problems(spec_file, "early_stopping.metric=train_loss") == [
        "--set early_stopping.metric=train_loss: early_stopping: missing required key 'mode'",
        "--set early_stopping.metric=train_loss: early_stopping: missing required key 'patience'",
    ]


def test_path_through_a_scalar_is_an_error(spec_file: Path) -> None:
    [problem] = _problems(spec_file, "optimizer.learning_rate.peak_value=1")
    assert "'optimizer.learning_rate' is 0.001, not a mapping" in problem


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("train.epochs", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train..epochs=3", "is not a dotted path of keys"),
        ("train.epochs=[1,", "invalid YAML"),
        ("model.args={a: 1, a: 2}", "duplicate key 'a'"),
    ],
)
def test_malformed_override_is_a_problem(spec_file: Path, arg: str, message: str) -> None:
    [problem] = _problems(spec_file, arg)
    assert problem.startswith(f"--set {arg}: ")
    assert message in problem


def test_list_items_by_index(spec_file: Path) -> None:
    loaded = load_spec(spec_file, ["model.args.features.0=64"], imports="none")
    assert loaded.spec.model.args["features"] == [64, 1]
    [problem] = _problems(spec_file, "model.args.features.5=64")
    assert "index 5 is out of range" in problem


def test_data_keys_follow_the_source(spec_file: Path) -> None:
    loaded = load_spec(spec_file, ["data.noise=0.5"], imports="none")
    assert loaded.spec.data.noise == 0.5
    problems = _problems(spec_file, "data.source=digits")
    assert any("unknown key 'task' for source 'digits'" in p for p in problems)


def test_valid_paths_include_document_names() -> None:
    paths = valid_paths({"losses": {"ce": {"fn": "mse"}}})
    assert "losses.ce.weight" in paths
    assert "optimizer.learning_rate" in paths
    assert "train.steps_per_call" in paths


def test_index_out_of_range_counts_items_in_good_grammar(spec_file: Path) -> None:
    spec_file.write_text(
        VALID.replace("  outputs: predictions", "  outputs: predictions\n  input: [batch.x]")
    )
    [problem] = _problems(spec_file, "model.input.1=batch.y")
    assert problem.endswith("index 1 is out of range: model.input has 1 item")
