"""Loading a spec: YAML 1.2 scalars, positions of keys and values, duplicate keys,
the `LoadedSpec` it returns, and a light import of `beagle.spec`."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beagle.spec import LoadedSpec, SpecError, load_spec
from beagle.spec.loader import Locator, parse_yaml, to_plain

ROOT = Path(__file__).resolve().parents[1]

VALID = """\
version: 1
name: tiny   # a comment
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
  args: {b1: 0.9}
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


def test_loads_a_valid_spec(spec_file: Path) -> None:
    loaded = load_spec(spec_file, imports="none")
    assert isinstance(loaded, LoadedSpec)
    assert loaded.spec.name == "tiny"
    assert loaded.path == spec_file
    assert loaded.source_name == "tiny.yaml"
    assert loaded.text == VALID
    assert loaded.hash == hashlib.sha256(VALID.encode()).hexdigest()


def test_yaml_12_numbers_1e_minus_3_is_a_float(spec_file: Path) -> None:
    loaded = load_spec(spec_file, imports="none")
    assert loaded.spec.optimizer.learning_rate == pytest.approx(1e-3)
    assert type(loaded.document["optimizer"]["learning_rate"]) is float


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e-3", 1e-3),
        ("1.0e-3", 1e-3),
        ("010", 10),  # YAML 1.2: decimal, not octal
        ("yes", "yes"),  # YAML 1.2: a string, not a boolean
        ("on", "on"),
        ("true", True),
        ("null", None),
        ("'3'", "3"),
        ("2020-01-01", "2020-01-01"),  # no dates in YAML 1.2's core schema: the text
        ("1_0", "1_0"),  # YAML 1.2 core schema: no digit separators, no binary
        ("0b11", "0b11"),
        ("1_0e-3", "1_0e-3"),
        ("1_000.5", "1_000.5"),
        ("0x1_F", "0x1_F"),
        ("0x1F", 31),
        ("0o17", 15),
        ("-5", -5),
        (".5", 0.5),
        ("1e3", 1000.0),
    ],
)
def test_scalars_follow_yaml_12(text: str, expected: object) -> None:
    parsed = parse_yaml(f"key: {text}\n", "x.yaml")
    value, problems = to_plain(parsed.data, Locator("x.yaml", parsed.positions))
    assert problems == []
    assert value["key"] == expected
    assert type(value["key"]) is type(expected)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  epochs: 2", "  epochs: 1_0", "train.epochs: expected an integer, got '1_0'"),
        ("  epochs: 2", "  epochs: 0b11", "train.epochs: expected an integer, got '0b11'"),
        (
            "learning_rate: 1e-3",
            "learning_rate: 1_0e-3",
            "optimizer.learning_rate: expected a number or a schedule mapping",
        ),
    ],
)
def test_yaml_11_numbers_are_strings_and_rejected(
    spec_file: Path, old: str, new: str, message: str
) -> None:
    spec_file.write_text(spec_file.read_text().replace(old, new))
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file, imports="none")
    [problem] = caught.value.problems
    assert message in str(problem)


def test_values_are_plain_python_types() -> None:
    parsed = parse_yaml("a: {b: [1, 2.5, x]}\nc: 0x10\n", "x.yaml")
    value, _ = to_plain(parsed.data, Locator("x.yaml", parsed.positions))
    assert value == {"a": {"b": [1, 2.5, "x"]}, "c": 16}
    assert type(value) is dict and type(value["a"]["b"]) is list and type(value["c"]) is int


def test_positions_of_keys_values_and_items() -> None:
    parsed = parse_yaml("a:\n  b: 1\n  c: [x, y]\nd: {e: 2}\n", "x.yaml")
    positions = parsed.positions
    assert positions[("a", "b")].key == (2, 3)
    assert positions[("a", "b")].value == (2, 6)
    assert positions[("a", "c", 1)].value == (3, 10)
    assert positions[("d", "e")].value == (4, 8)
    assert positions[("a",)].collection


def test_problem_points_at_value_or_nearest_parent(spec_file: Path) -> None:
    loaded = load_spec(spec_file, imports="none")
    at_value = loaded.problem(("optimizer", "learning_rate"), "bad", "fix it")
    assert (at_value.line, at_value.column) == (13, 18)
    assert str(at_value) == f"{spec_file}:13:18: optimizer.learning_rate: bad\n  hint: fix it"
    # model.input is not written: the problem points at the `model` key.
    missing = loaded.problem(("model", "input"), "no such batch key")
    assert (missing.line, missing.column, missing.path) == (3, 1, "model.input")
    item = loaded.problem(["model", "args", "features", 1], "too wide")
    assert (item.line, item.column) == (5, 25)
    block = loaded.problem(("losses", "mse"), "odd")
    assert (block.line, block.column) == (16, 3)


def test_duplicate_keys_are_all_rejected_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(VALID + "  epochs: 3\nname: other\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    problems = [(p.line, p.path, p.message, p.hint) for p in caught.value.problems]
    assert problems == [
        (
            21,
            "train",
            "duplicate key 'epochs'",
            "it is first given on line 20; a key may appear once",
        ),
        (22, "", "duplicate key 'name'", "it is first given on line 2; a key may appear once"),
    ]


def test_yaml_syntax_error_is_one_problem_with_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nname: [x\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    [problem] = caught.value.problems
    assert problem.line == 3 and problem.message.startswith("invalid YAML: ")


def _only_problem(tmp_path: Path, text: str) -> object:
    path = tmp_path / "aliases.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    [problem] = caught.value.problems
    return problem


@pytest.mark.parametrize(
    "text",
    ["a: &x [*x]\n", "a: &x {b: *x}\n", "a: &x [1, [2, *x]]\n", "a: &x {<<: *x}\n"],
)
def test_recursive_alias_is_a_positioned_problem(tmp_path: Path, text: str) -> None:
    problem = _only_problem(tmp_path, text)
    assert str(problem).startswith(f"{tmp_path / 'aliases.yaml'}:1:")
    assert "recursive alias '*x'" in str(problem)


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    started = time.perf_counter()
    problem = _only_problem(tmp_path, "\n".join(lines) + "\n")
    assert time.perf_counter() - started < 2
    assert "more than 10000 values once its aliases are expanded" in str(problem)
    assert problem.line == 5  # type: ignore[attr-defined]  # the alias that goes over


def test_deep_nesting_is_refused_without_a_traceback(tmp_path: Path) -> None:
    problem = _only_problem(tmp_path, "a: " + "[" * 3000 + "]" * 3000 + "\n")
    assert "nested more than 100 levels deep" in str(problem)


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    text = VALID.replace("  args: {b1: 0.9}", "  args: &opt {b1: 0.9}") + "  shared: *opt\n"
    parsed = parse_yaml(text, "x.yaml")
    assert parsed.problems == []
    parsed = parse_yaml("a: &a [1, 2]\nb: [*a, *a]\nc: {<<: {k: 1}}\n", "x.yaml")
    value, problems = to_plain(parsed.data, Locator("x.yaml", parsed.positions))
    assert problems == [] and value["b"] == [[1, 2], [1, 2]]


def test_two_documents_in_one_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(VALID + "---\nversion: 1\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    [problem] = caught.value.problems
    assert problem.line == 21
    assert "another document" in problem.message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "null\n"])
def test_empty_file_is_a_clear_problem(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    assert [p.message for p in caught.value.problems] == ["the spec is empty"]


@pytest.mark.parametrize("text", ["- 1\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    [problem] = caught.value.problems
    assert problem.message.startswith("a spec is a mapping of sections")


def test_non_string_keys_are_named_as_written(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(VALID.replace("  mse:\n", "  1:\n"))
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    [problem] = caught.value.problems
    assert problem.path == "losses.1" and (problem.line, problem.column) == (16, 3)
    assert "'1' is not a valid name" in problem.message


def test_adversarial_strings_in_names_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    evil = VALID.replace("  mse:\n", '  "x\\nimport os":\n').replace(
        "name: tiny", 'name: "tiny\\n"'
    )
    path.write_text(evil)
    with pytest.raises(SpecError) as caught:
        load_spec(path, imports="none")
    assert {p.path for p in caught.value.problems} == {"name", "losses.x\nimport os"}


def test_relative_and_absolute_paths_give_the_same_spec_and_hash(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(spec_file.parent)
    relative = load_spec("tiny.yaml", imports="none")
    absolute = load_spec(spec_file.resolve(), imports="none")
    assert relative.spec == absolute.spec and relative.hash == absolute.hash
    assert relative.source_name == absolute.source_name == "tiny.yaml"
    assert relative.problem(("name",), "x").file == "tiny.yaml"


def test_importing_beagle_spec_imports_nothing_heavy() -> None:
    code = (
        "import sys, beagle.spec\n"
        "heavy = ('jax', 'flax', 'optax', 'orbax', 'black', 'jinja2')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_find_mode_load_imports_nothing_heavy(spec_file: Path) -> None:
    code = (
        "import sys\n"
        "from beagle.spec import load_spec\n"
        f"load_spec({str(spec_file)!r}, ['train.epochs=3'], imports='find')\n"
        "heavy = ('jax', 'flax', 'optax', 'orbax', 'black', 'jinja2')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- never a traceback ------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "version: 1\n",
        "name: x\n",
        "model:\n",
        "  class: a:B\n",
        "  outputs: [a, a]\n",
        "data: {source: python, train: a:b, batch_size: 1}\n",
        "losses:\n",
        "  l: {fn: mse}\n",
        "  l2: {fn: x:y, args: {a: outputs.q}}\n",
        "train: {epochs: 1, steps_per_call: 3}\n",
        "optimizer: {name: sgd, learning_rate: {schedule: s, x: [1]}}\n",
        "- 1\n",
        "? [a]\n: 1\n",
        "&a {x: 1}\n",
        "<<: *a\n",
        "!!binary aGk=\n",
        "a: !t 1\n",
        "  \t\n",
        "'\n",
        "{\n",
        "metrics: {loss: {fn: accuracy}}\n",
        "1: 2\n",
        "null: ~\n",
        "early_stopping: 3\n",
        "validation:\n",
        "checkpoint: {best: {metric: val_x}}\n",
        "%YAML 1.1\n---\n",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_FRAGMENTS, max_size=10), st.lists(st.text(max_size=20), max_size=3))
def test_any_text_gives_a_spec_or_problems_never_a_traceback(
    tmp_path: Path, fragments: list[str], overrides: list[str]
) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text("".join(fragments))
    try:
        load_spec(path, overrides, imports="none")
    except SpecError as error:
        assert error.problems
        for problem in error.problems:
            assert str(problem).startswith(problem.file)
