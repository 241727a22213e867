"""Errors of the spec front end: golden error text for every invalid spec in
`tests/invalid_specs/`, and the rules of SPEC.md's "Errors" pinned one by one.

Update the goldens with `pytest --update-goldens` or `BEAGLE_UPDATE_GOLDENS=1 pytest`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import pytest
from doc_paths import doc_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from beagle.spec import Problem, SpecError, load_spec
from beagle.spec.loader import Locator
from beagle.spec.models import Spec
from beagle.spec.validate import check_structure

INVALID = Path(__file__).parent / "invalid_specs"
CASES = sorted(p.stem for p in INVALID.glob("*.yaml"))

VALID = """\
version: 1
name: tiny
model:
  class: beagle.models:MLP
  args: {features: [16, 1]}
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


def _update(request: pytest.FixtureRequest) -> bool:
    return bool(
        os.environ.get("BEAGLE_UPDATE_GOLDENS") == "1"
        or request.config.getoption("--update-goldens", default=False)
    )


def _errors(path: Path | str, overrides: tuple[str, ...] = (), imports: Any = "none") -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path, overrides, imports=imports)
    return str(caught.value)


def test_there_are_at_least_25_invalid_specs_each_with_its_golden_and_no_stray_golden() -> None:
    assert len(CASES) >= 25
    assert sorted(p.stem for p in INVALID.glob("*.txt")) == CASES


@pytest.mark.parametrize("name", CASES)
def test_invalid_spec_prints_its_golden_error_text(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(INVALID)  # as `beagle check NAME.yaml` run from that folder
    actual = _errors(f"{name}.yaml", imports="import") + "\n"
    golden = INVALID / f"{name}.txt"
    if _update(request):
        golden.write_text(actual)
    assert golden.exists(), f"no golden {golden.name}: run pytest --update-goldens"
    expected = golden.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(True), actual.splitlines(True), golden.name, "actual"
            )
        )
        pytest.fail(
            f"error text of {name}.yaml changed:\n{diff}\n"
            "update with: pytest --update-goldens (or BEAGLE_UPDATE_GOLDENS=1)"
        )


def test_every_golden_error_line_has_file_line_and_column() -> None:
    for name in CASES:
        for line in (INVALID / f"{name}.txt").read_text().splitlines():
            if line.startswith("  hint: "):
                continue
            head = line.split(": ", 1)[0]
            file, row, column = head.split(":")
            assert file == f"{name}.yaml", line
            assert int(row) >= 1 and int(column) >= 1, line


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_fixture_loads(tmp_path: Path) -> None:
    loaded = load_spec(_write(tmp_path, VALID), imports="none")
    assert loaded.spec.name == "tiny"


def test_wrong_type_names_value_and_position(tmp_path: Path) -> None:
    text = VALID.replace("  epochs: 2", "  epochs: high")
    assert _errors(_write(tmp_path, text)) == (
        f"{tmp_path / 'spec.yaml'}:19:11: train.epochs: expected an integer, got 'high'"
    )


def test_problem_format_with_and_without_hint() -> None:
    problem = Problem("specs/x.yaml", 14, 5, "losses.ce.weight", "expected a number, got 'high'")
    assert str(problem) == "specs/x.yaml:14:5: losses.ce.weight: expected a number, got 'high'"
    hinted = Problem("x.yaml", 3, 1, "", "unknown key 'lossses'", "did you mean 'losses'?")
    assert str(hinted) == "x.yaml:3:1: unknown key 'lossses'\n  hint: did you mean 'losses'?"


def test_all_problems_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        VALID.replace("version: 1", "version: 3")
        .replace("  batch_size: 32", "  batch_size: 0")
        .replace("  epochs: 2", "  epochs: 2\n  colour: red")
    )
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text), imports="none")
    lines = [(p.line, p.path, p.message) for p in caught.value.problems]
    assert lines == [
        (1, "version", "unsupported version 3"),
        (10, "data.batch_size", "must be at least 1, got 0"),
        (20, "train", "unknown key 'colour'"),
    ]


def test_misspelt_key_hints_the_closest_and_is_not_also_missing(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, VALID.replace("losses:", "lossses:")), imports="none")
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (14, 1)
    assert problem.message == "unknown key 'lossses'"
    assert problem.hint == "did you mean 'losses'?"


def test_unknown_key_with_nothing_close_lists_valid_keys(tmp_path: Path) -> None:
    text = VALID.replace("  epochs: 2", "  epochs: 2\n  zzz: 1")
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text), imports="none")
    [problem] = caught.value.problems
    assert problem.hint == ("valid keys: 'batches_per_epoch', 'epochs', 'nan', 'steps_per_call'")


def test_union_errors_collapse_into_one_message(tmp_path: Path) -> None:
    text = VALID.replace("  learning_rate: 1e-3", "  learning_rate: [1, 2]")
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text), imports="none")
    [problem] = caught.value.problems
    assert problem.message.startswith("expected a number or a schedule mapping")
    assert problem.message.endswith("got a list")


def test_mapping_branch_of_a_union_reports_inside_the_mapping(tmp_path: Path) -> None:
    text = VALID.replace(
        "  learning_rate: 1e-3",
        "  learning_rate: {schedule: linear_schedule, init_value: 0.1, end_value: 0.0,"
        " transition_steps: many}",
    )
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text), imports="none")
    [problem] = caught.value.problems
    assert problem.path == "optimizer.learning_rate.transition_steps"
    assert problem.message == "schedule arguments are numbers, got 'many'"


def test_batch_norm_with_train_flag_null_points_at_train_flag(tmp_path: Path) -> None:
    text = VALID.replace(
        "  outputs: predictions", "  outputs: predictions\n  train_flag: null\n  batch_norm: true"
    )
    [problem] = _problems(tmp_path, text)
    assert (problem.path, problem.line, problem.column) == ("model.train_flag", 7, 15)


def test_batch_norm_with_default_train_flag_is_fine(tmp_path: Path) -> None:
    text = VALID.replace("  outputs: predictions", "  outputs: predictions\n  batch_norm: true")
    load_spec(_write(tmp_path, text), imports="none")


def _problems(tmp_path: Path, text: str, **kw: Any) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text), imports=kw.get("imports", "none"))
    return caught.value.problems


def test_metric_named_like_loss_points_at_metric_key(tmp_path: Path) -> None:
    text = (
        VALID + "metrics:\n  mse:\n    fn: mae\n    args: {predictions: outputs.predictions,"
        " targets: batch.y}\n"
    )
    [problem] = _problems(tmp_path, text)
    assert (problem.path, problem.line, problem.column) == ("metrics.mse", 21, 3)


def test_repeated_output_points_at_outputs(tmp_path: Path) -> None:
    text = VALID.replace("  outputs: predictions", "  outputs: {a: predictions, b: predictions}")
    [problem] = _problems(tmp_path, text)
    assert (problem.path, problem.line, problem.column) == ("model.outputs", 6, 3)


def test_reference_to_undeclared_output_hints_declared_outputs(tmp_path: Path) -> None:
    text = VALID.replace("outputs.predictions", "outputs.zzz")
    [problem] = _problems(tmp_path, text)
    assert problem.line == 17 and problem.column == 25
    assert problem.hint == "declared outputs: 'predictions'"


def test_loss_may_share_a_name_with_an_output(tmp_path: Path) -> None:
    text = VALID.replace("  mse:\n", "  predictions:\n")
    load_spec(_write(tmp_path, text), imports="none")


@pytest.mark.parametrize(
    ("metric", "validation", "ok"),
    [
        ("train_loss", False, True),
        ("val_loss", True, True),
        ("val_loss", False, False),
        ("train_mse", False, False),  # one loss term: not reported under its own name
        ("train_skipped_steps", False, False),
    ],
)
def test_early_stopping_metric_is_a_history_key(
    tmp_path: Path, metric: str, validation: bool, ok: bool
) -> None:
    text = VALID + f"early_stopping: {{metric: {metric}, mode: min, patience: 2}}\n"
    if validation:
        text += "validation: {}\n"
    if ok:
        load_spec(_write(tmp_path, text), imports="none")
    else:
        [problem] = _problems(tmp_path, text)
        assert problem.path == "early_stopping.metric"


def test_skipped_steps_is_a_history_key_with_nan_skip(tmp_path: Path) -> None:
    text = VALID.replace("  epochs: 2", "  epochs: 2\n  nan: skip")
    text += "early_stopping: {metric: train_skipped_steps, mode: min, patience: 2}\n"
    load_spec(_write(tmp_path, text), imports="none")


def test_module_not_found_in_find_mode_runs_no_user_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "sideeffect"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    (package / "models.py").write_text("Net = object\n")
    monkeypatch.chdir(tmp_path)
    text = VALID.replace("beagle.models:MLP", "sideeffect.models:Net")
    load_spec(_write(tmp_path, text), imports="find")
    assert not (tmp_path / "ran").exists()
    missing = VALID.replace("beagle.models:MLP", "sideeffect.modelz:Net")
    [problem] = _problems(tmp_path, missing, imports="find")
    assert problem.message == "module 'sideeffect.modelz' cannot be found"
    assert problem.hint == "did you mean 'sideeffect.models'?"
    assert not (tmp_path / "ran").exists()


def test_user_code_raising_on_import_is_a_problem_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "explodes.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.chdir(tmp_path)
    text = VALID.replace("beagle.models:MLP", "explodes:Net")
    [problem] = _problems(tmp_path, text, imports="import")
    assert problem.message == "importing 'explodes' failed: RuntimeError: boom"


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    assert _errors(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"


def test_not_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"version: 1\nname: caf\xe9\n")
    assert _errors(path).endswith(":2:1: the file is not UTF-8 text")


# --- the structural walk agrees with pydantic ------------------------------------------

_BASE_DOC: dict[str, Any] = {
    "version": 1,
    "name": "tiny",
    "model": {
        "class": "pkg.mod:Net",
        "args": {"features": [4, 1]},
        "input": ["batch.x", "batch.z"],
        "batch_norm": False,
        "train_flag": "train",
        "rngs": ["dropout"],
        "outputs": {"a": "out"},
    },
    "data": {"source": "synthetic", "task": "regression", "batch_size": 8, "val_fraction": 0.1},
    "optimizer": {
        "name": "adam",
        "learning_rate": {"schedule": "linear_schedule", "init_value": 0.1},
        "args": {"b1": 0.9, "mask": None},
        "clip_grad_norm": 1.0,
        "accumulate": 2,
    },
    "losses": {"l": {"fn": "mse", "args": {"predictions": "outputs.out", "k": [1, 2]}}},
    "metrics": {"m": {"fn": "pkg:metric", "args": {"flag": True}}},
    "train": {"epochs": 1, "batches_per_epoch": 4, "steps_per_call": 2, "nan": "skip"},
    "early_stopping": {"metric": "val_loss", "mode": "min", "patience": 1, "min_delta": 0},
    "validation": {"every": 1, "batches": 2},
    "checkpoint": {"dir": "c", "every": 1, "keep": 1, "best": {"metric": "m", "mode": "max"}},
    "parallel": {"data": "auto"},
    "log": {"dir": "runs", "plot": True, "tensorboard": False},
}

_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 0.5, -1.5, 1e-3, float("inf"), float("nan"), 2.0]),
    st.sampled_from(
        [
            "",
            "x",
            "batch.x",
            "outputs.out",
            "params",
            "a.b:c",
            "class",
            "A-b",
            "x\n",
            "auto",
            "min",
            "skip",
            "digits",
            "npz",
            "python",
            "regression",
            "é",
            "a" * 70,
        ]
    ),
    st.lists(st.integers(0, 3), max_size=2),
    st.just({}),
    st.just({"x": 1}),
    st.just(["a", "a"]),
)


def _mutate(doc: Any, path: tuple[Any, ...], value: Any, delete: bool, add: str | None) -> Any:
    import copy

    doc = copy.deepcopy(doc)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if add is not None and isinstance(parent, dict):
        parent[add] = value
    elif delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([p for p in doc_paths(_BASE_DOC) if p]),
    _ODD_VALUES,
    st.booleans(),
    st.one_of(st.none(), st.sampled_from(["extra", "source", "schedule", "fn", "class"])),
)
def test_structural_walk_accepts_exactly_what_pydantic_accepts(
    path: tuple[Any, ...], value: Any, delete: bool, add: str | None
) -> None:
    doc = _mutate(_BASE_DOC, path, value, delete, add)
    try:
        Spec.model_validate(doc)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    spec, problems = check_structure(doc, Locator("x.yaml"))
    walk_ok = spec is not None
    assert walk_ok == pydantic_ok, (doc, problems)
    if not walk_ok:
        assert problems
        # The walk's own readable messages, never pydantic's fallback text.
        assert not any("Input should" in p.message for p in problems), problems


def test_base_document_of_the_property_test_is_valid() -> None:
    spec, problems = check_structure(_BASE_DOC, Locator("x.yaml"))
    assert problems == [] and spec is not None


def test_optional_mapping_with_only_comments_is_empty(tmp_path: Path) -> None:
    text = VALID.replace("train:\n", "metrics:\n  # mae: {fn: mae}\ntrain:\n").replace(
        "  args: {features: [16, 1]}", "  args: {features: [16, 1]}\n  rngs:\n"
    )
    text = text.replace("  rngs:\n", "")
    text = text.replace("  name: adam\n", "  name: adam\n  args:\n  # b1: 0.9\n")
    text += "validation:\ncheckpoint:\nlog:\nearly_stopping:\n"
    loaded = load_spec(_write(tmp_path, text), imports="none")
    assert loaded.spec.metrics == {} and loaded.spec.optimizer.args == {}
    assert loaded.spec.validation is None and loaded.spec.checkpoint is None
    assert "metrics" not in loaded.document


def test_set_metrics_null_removes_the_section(tmp_path: Path) -> None:
    text = VALID + "metrics:\n  mae: {fn: mae, args: {predictions: outputs.predictions}}\n"
    loaded = load_spec(_write(tmp_path, text), ["metrics=null"], imports="none")
    assert loaded.spec.metrics == {}


def test_null_validation_is_no_validation_even_without_val_data(tmp_path: Path) -> None:
    text = VALID.replace(
        "  source: synthetic\n  task: regression\n", "  source: npz\n  train: t.npz\n"
    )
    loaded = load_spec(_write(tmp_path, text + "validation:\n"), imports="none")
    assert loaded.spec.validation is None


def test_problem_with_an_empty_value_points_at_its_own_key(tmp_path: Path) -> None:
    text = VALID.replace("  epochs: 2", "  epochs:\n  # later\n  steps_per_call: 1")
    text = text.replace("optimizer:\n", "optimizer:\n  # soon\n")
    path = _write(tmp_path, text.replace("  name: adam\n", "  name:\n"))
    assert _errors(path).splitlines() == [
        f"{path}:13:3: optimizer.name: expected a string, got null",
        f"{path}:20:3: train.epochs: expected an integer, got null",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("input", "[]"), ("outputs", "[]"), ("outputs", "{}")],
)
def test_empty_model_input_or_outputs_is_a_schema_problem(
    tmp_path: Path, field: str, value: str
) -> None:
    text = VALID.replace(
        "  outputs: predictions\n", f"  outputs: predictions\n  {field}: {value}\n"
    )
    text = text.replace("  outputs: predictions\n  outputs:", "  outputs:")
    path = _write(tmp_path, text)
    line = 6 if field == "outputs" else 7
    assert _errors(path) == f"{path}:{line}:3: model.{field}: needs at least one entry"


def test_declared_outputs_hint_names_each_output_once(tmp_path: Path) -> None:
    text = VALID.replace("  outputs: predictions", "  outputs: [out, out]").replace(
        "outputs.predictions", "outputs.ou"
    )
    errors = _errors(_write(tmp_path, text))
    assert "declared outputs: 'out')" in errors
    assert "'out' and 'out'" not in errors


@pytest.mark.parametrize(
    ("old", "new", "hint"),
    [
        ("  name: adam", "  name: 'adam(0.1) or optax.sgd'", "did you mean 'adam' or 'sgd'?"),
        ("  name: adam", "  name: 'adamw!'", "did you mean 'adamw'"),
        ("  args: {features: [16, 1]}", "  args: {features: [16, 1], 'x=1;import os': 1}", None),
        ("  epochs: 2", "  epochs: 2\nname: 'x y'", None),
    ],
)
def test_not_a_name_hint_offers_valid_names_never_the_input_mangled(
    tmp_path: Path, old: str, new: str, hint: str | None
) -> None:
    text = VALID.replace(old, new)
    if "name: 'x y'" in new:
        text = text.replace("name: tiny\n", "")
    [problem] = [p for p in _problem_list(tmp_path, text) if "is not a valid" in p.message]
    assert "ASCII letters, digits and '_'" in problem.message
    if hint is None:
        assert problem.hint is None
    else:
        assert problem.hint is not None and problem.hint.startswith(hint)
    for mangled in ("adam_0_1", "x_1_import_os", "x_y"):
        assert mangled not in str(problem)


def _problem_list(tmp_path: Path, text: str) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, text), imports="none")
    return caught.value.problems


def test_missing_npz_file_is_reported_with_the_other_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "there.npz").write_bytes(b"PK\x03\x04")
    text = VALID.replace(
        "  source: synthetic\n  task: regression\n",
        "  source: npz\n  train: missing.npz\n  val: folder.npz\n  colour: red\n",
    )
    path = _write(tmp_path, text)
    lines = [(p.line, p.message) for p in _problem_list_import(path)]
    assert lines == [
        (9, "no such file: 'missing.npz'"),
        (10, "'folder.npz' is a folder, not an .npz file"),
        (11, "unknown key 'colour'"),
    ]
    fixed = text.replace("  colour: red\n", "").replace("folder.npz", "there.npz")
    load_spec(_write(tmp_path, fixed), imports="find")  # gen reads no data files
    fixed = fixed.replace("missing.npz", "there.npz")
    assert load_spec(_write(tmp_path, fixed), imports="import").spec.data.source == "npz"


def _problem_list_import(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="import")
    return caught.value.problems
