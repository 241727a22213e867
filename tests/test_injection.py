"""No spec string is ever pasted raw into code (property-based).

Hypothesis puts adversarial strings (quotes, newlines, `;`, `#`, `__import__`, unicode
look-alikes, very long names, the module's own names) into every string slot of a valid
spec, as parsed data. Each result is either rejected (pydantic validation, or the
compiler's own `CompileError`) or compiles to a module that parses, and whose AST has no
node kind, call, import or name the clean spec's module lacks, except names spelt by the
injected string itself where that string is a valid identifier, import path or
reference. A string accepted in a literal slot must come back as exactly one string
constant.
"""

from __future__ import annotations

import ast
import copy
import datetime
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from beagle import api
from beagle.compiler import CompileError, compile_spec, lower, render_module
from beagle.compiler.lower import TEMPLATE_NAMES, render_literal
from beagle.spec import Spec

TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SAFE_FORM = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?"
)

BASE: dict[str, Any] = {
    "version": 1,
    "name": "probe",
    "seed": 0,
    "model": {
        "class": "examples.vae:VAE",
        "args": {"latents": 4, "name": "net", "hidden": [8, 8]},
        "input": ["batch.image", "batch.mask"],
        "batch_norm": True,
        "train_flag": "train",
        "rngs": ["dropout", "sample"],
        "outputs": {"recon": "recon", "stats": "mean"},
    },
    "data": {"source": "python", "train": "examples.data:train", "batch_size": 4},
    "optimizer": {
        "name": "adamw",
        "learning_rate": {"schedule": "linear_schedule", "init_value": 0.1, "end_value": 0.0,
                          "transition_steps": 10},
        "args": {"weight_decay": 0.01},
        "clip_grad_norm": 1.0,
        "accumulate": 2,
    },
    "losses": {
        "recon": {"fn": "mse", "args": {"predictions": "outputs.recon", "targets": "batch.image"}},
        "custom": {"fn": "examples.custom_losses:focal_loss",
                   "args": {"logits": "outputs.mean", "labels": "batch.label", "gamma": 2.0},
                   "weight": 0.5},
        "decay": {"fn": "l2", "args": {"tree": "params"}, "weight": 1e-4},
    },
    "metrics": {
        "accuracy": {"fn": "accuracy", "args": {"logits": "outputs.mean", "labels": "batch.label"}},
        "ce": {"fn": "examples.custom_losses:cross_entropy",
               "args": {"logits": "outputs.mean", "labels": "batch.label"}},
    },
    "train": {"epochs": 1, "steps_per_call": 2, "nan": "skip"},
    "early_stopping": {"metric": "val_loss", "mode": "min", "patience": 2},
    "validation": {"every": 1, "batches": 2},
    "checkpoint": {"dir": "runs/x", "best": {"metric": "val_accuracy", "mode": "max"}},
    "log": {"dir": "runs/probe"},
}  # fmt: skip


def _list_outputs(data: dict[str, Any]) -> None:
    data["model"]["outputs"] = ["recon", "mean"]


def _str_outputs(data: dict[str, Any]) -> None:
    data["model"]["outputs"] = "recon"
    for section in ("losses", "metrics"):
        for entry in data[section].values():
            entry["args"] = {
                k: ("outputs.recon" if v == "outputs.mean" else v) for k, v in entry["args"].items()
            }


VARIANTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "dict_outputs": lambda data: None,
    "list_outputs": _list_outputs,
    "str_outputs": _str_outputs,
}


def base(variant: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    VARIANTS[variant](data)
    return data


# A slot is (path to a dict, key): `("value", path, key)` replaces the value there,
# `("key", path, key)` renames the key (keeping its place).
Slot = tuple[str, tuple[str | int, ...], str | int]
LITERAL_SLOTS: set[Slot] = {("value", ("model", "args"), "name")}


def slots(data: dict[str, Any]) -> list[Slot]:
    """Every place in `data` that holds a string, or a key that is a spec name."""
    found: list[Slot] = []

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if path and path[-1] in ("args", "losses", "metrics", "outputs", "learning_rate"):
                    found.append(("key", path, key))
                if isinstance(value, str):
                    found.append(("value", path, key))
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    found.append(("value", path, index))
                walk(value, (*path, index))

    walk(data, ())
    return found


def inject(data: dict[str, Any], slot: Slot, text: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    kind, path, key = slot
    node: Any = data
    for part in path:
        node = node[part]
    if kind == "value":
        node[key] = text
    else:
        items = [(text if k == key else k, v) for k, v in node.items()]
        node.clear()
        node.update(items)
    return data


def dotted(node: ast.expr) -> str:
    """`a.b.c` for a name or attribute chain; `<expr>` stands for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "<expr>"


class Shape:
    """What a module does, as far as injection could change it."""

    def __init__(self, source: str) -> None:
        tree = ast.parse(source)
        self.kinds = {type(node).__name__ for node in ast.walk(tree)}
        self.names: set[str] = set()
        self.calls: set[str] = set()
        self.imports: set[str] = set()
        self.strings: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                self.names.add(node.id)
            elif isinstance(node, ast.Attribute):
                self.names.add(node.attr)
            elif isinstance(node, ast.FunctionDef):
                self.names.add(node.name)
            elif isinstance(node, ast.arg):
                self.names.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg is not None:
                self.names.add(node.arg)
            elif isinstance(node, ast.alias):
                self.names.update(filter(None, (node.name, node.asname)))
            elif isinstance(node, ast.ImportFrom | ast.Import):
                modules = [node.module] if isinstance(node, ast.ImportFrom) else []
                modules += (
                    [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
                )
                self.imports.update(m for m in modules if m)
            elif isinstance(node, ast.Call):
                self.calls.add(dotted(node.func))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                self.strings.append(node.value)


def allowed_names(text: str) -> set[str]:
    """Names an injected string may legitimately add: its own tokens, or their aliases."""
    if not SAFE_FORM.fullmatch(text) or not text.isascii():
        return set()
    return set(TOKEN.findall(text))


def assert_no_new_code(clean: Shape, dirty: Shape, text: str) -> None:
    assert dirty.kinds <= clean.kinds, dirty.kinds - clean.kinds
    allowed = allowed_names(text)

    def is_allowed(name: str) -> bool:
        return name in clean.names or name in allowed or re.sub(r"_\d+$", "", name) in allowed

    new_names = {name for name in dirty.names if not is_allowed(name)}
    assert not new_names, new_names
    for call in dirty.calls - clean.calls:
        assert all(part == "<expr>" or is_allowed(part) for part in call.split(".")), call
    for module in dirty.imports - clean.imports:
        assert set(module.split(".")) <= allowed, module


ADVERSARIAL = [
    'x"); __import__("os").system("echo pwned"); ("',
    "x'); import os; ('",
    "a\nimport os",
    "a\r\nimport os",
    "a;b",
    "a # comment",
    "__import__",
    "__import__('os')",
    "os:system",
    "builtins:eval",
    "os.path:join.__globals__",
    "outputs.x; import os",
    "batch.x\n",
    "params.__class__",
    "ｅval",  # fullwidth e
    "ехес",  # Cyrillic look-alikes of "exec"
    "paramѕ",  # Cyrillic s
    "\u2028import os",
    "a" * 5000,
    "b" * 65,
    "{{ ir }}",
    "{% raw %}",
    '"""',
    "'''",
    "\\",
    "\x00",
    "",
    " ",
    "lambda: 0",
    "jax", "jnp", "optax", "state", "batch", "params", "loss", "terms", "outputs", "grads",
    "TrainState", "Any", "Arrays", "train_step", "compute_losses", "print", "dict", "zip",
]  # fmt: skip

adversarial_text = st.one_of(
    st.sampled_from(ADVERSARIAL),
    st.text(alphabet=st.sampled_from(list("ab_.:;#'\"\n\\ ()[]{}=") + ["е", "ﬁ", "\u200b"])),
    st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}(\.[a-z_]{1,4})?(:[A-Za-z_]{1,6})?\Z"),
)

CLEAN = {
    variant: Shape(compile_spec(Spec.model_validate(base(variant)), "probe.yaml"))
    for variant in VARIANTS
}
ALL_SLOTS = [(variant, slot) for variant in VARIANTS for slot in slots(base(variant))]


def test_the_probe_spec_reaches_every_string_slot_and_compiles() -> None:
    assert len(ALL_SLOTS) > 100
    assert {"Lambda", "ImportFrom", "Call", "JoinedStr"} <= CLEAN["dict_outputs"].kinds


def check_injection(variant: str, slot: Slot, text: str, *, formatted: bool) -> bool:
    """Inject `text`; False when rejected, True when compiled (and checked)."""
    data = inject(base(variant), slot, text)
    try:
        spec = Spec.model_validate(data)
        if formatted:
            module = compile_spec(spec, "probe.yaml")
        else:  # black changes layout, never the AST: the rendered text is enough, and fast
            module = render_module(lower(spec, "probe.yaml"))
    except (ValidationError, CompileError):
        return False
    dirty = Shape(module)
    assert_no_new_code(CLEAN[variant], dirty, text)
    if slot in LITERAL_SLOTS:
        assert dirty.strings.count(text) == CLEAN[variant].strings.count(text) + 1
    return True


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_adversarial_string_in_every_slot_is_rejected_or_stays_a_name_or_literal(
    variant: str,
) -> None:
    compiled = 0
    for slot in slots(base(variant)):
        for text in ADVERSARIAL:
            compiled += check_injection(variant, slot, text, formatted=False)
    assert compiled > 100  # the safe names and literals do compile


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(choice=st.sampled_from(ALL_SLOTS), text=adversarial_text)
def test_adversarial_strings_are_rejected_or_stay_names_and_literals(
    choice: tuple[str, Slot], text: str
) -> None:
    variant, slot = choice
    check_injection(variant, slot, text, formatted=True)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=adversarial_text)
def test_adversarial_spec_file_names_stay_inside_the_header_comment(text: str) -> None:
    module = compile_spec(Spec.model_validate(base("dict_outputs")), text)
    header = module.splitlines()[0]
    assert header.startswith("# Generated by `beagle gen` from ")
    assert module.splitlines()[1].startswith("# ")
    assert ast.dump(ast.parse(module)) == ast.dump(
        ast.parse(compile_spec(Spec.model_validate(base("dict_outputs")), "probe.yaml"))
    )


@pytest.mark.parametrize("name", sorted(TEMPLATE_NAMES | {"print", "dict", "float", "ValueError"}))
def test_user_functions_named_like_the_modules_own_names_are_imported_under_an_alias(
    name: str,
) -> None:
    data = base("dict_outputs")
    data["losses"]["custom"]["fn"] = f"examples.custom_losses:{name}"
    data["model"]["class"] = f"examples.vae:{name}"
    module = compile_spec(Spec.model_validate(data), "probe.yaml")
    tree = ast.parse(module)
    bound = [
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    assert len(bound) == len(set(bound))
    user_bound = [n for n in bound if re.fullmatch(rf"{name}_\d+", n)]
    assert len(user_bound) == 2  # the class and the loss, each under its own alias
    assert not set(user_bound) & TEMPLATE_NAMES


def test_a_spec_file_with_code_in_a_name_is_rejected_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "evil.yaml"
    spec.write_text(
        "version: 1\nname: evil\nmodel: {class: 'beagle.models:MLP', args: {features: [1]}}\n"
        "data: {source: synthetic, task: regression, batch_size: 4}\n"
        "optimizer: {name: adam, learning_rate: 0.1}\n"
        'losses:\n  \'x"]; __import__("os")  #\': {fn: mse, args: {predictions: outputs.outputs,'
        " targets: batch.y}}\n"
        "train: {epochs: 1}\n"
    )
    report = api.generate([spec], tmp_path / "out")
    assert report.problems and not report.written
    assert not (tmp_path / "out").exists()


yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(value=yaml_values)
def test_literals_round_trip_through_python_source_without_any_code(value: object) -> None:
    source = render_literal(value)
    tree = ast.parse(source, mode="eval")
    allowed = (ast.Expression, ast.Constant, ast.List, ast.Dict, ast.UnaryOp, ast.USub, ast.Load)
    assert all(isinstance(node, allowed) for node in ast.walk(tree)), source
    assert ast.literal_eval(source) == value


def test_non_finite_numbers_become_float_calls_and_other_yaml_values_are_refused() -> None:
    assert render_literal(float("inf")) == 'float("inf")'
    assert render_literal([float("-inf")]) == '[float("-inf")]'
    assert render_literal(float("nan")) == 'float("nan")'
    for value in (datetime.date(2024, 1, 1), b"bytes", {1.5: 2}, {True: 1}, object()):
        with pytest.raises(CompileError):
            render_literal(value)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("losses", "recon", "args", "predictions"), "outputs.nope", "not a declared model output"),
        (("losses", "recon", "fn"), "softmax_cross_entropi", "not a built-in loss"),
        (("losses", "recon", "args", "delta"), 1.0, "unknown arguments ['delta']"),
        (("metrics", "accuracy", "fn"), "top_k_accuracy", "missing ['k']"),
        (("optimizer", "name"), "__import__", "not one of beagle's optax optimizers"),
        (("optimizer", "learning_rate", "schedule"), "exec", "not one of beagle's optax schedules"),
        (("model", "args", "when"), datetime.date(2024, 1, 1), "cannot write a date"),
        (("model", "train_flag"), None, "train_flag is required"),
        (("metrics", "recon"), {"fn": "l2_norm", "args": {}}, "not a built-in metric"),
        (("metrics", "decay"), {"fn": "x.y:z"}, "collides with a loss term"),
        (("losses", "loss"), {"fn": "l2", "args": {"tree": "params"}}, "would hide the metric"),
    ],
)
def test_lowering_refuses_what_validation_should_have_caught(
    path: tuple[str, ...], value: object, message: str
) -> None:
    data = base("dict_outputs")
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    spec = Spec.model_validate(data)
    with pytest.raises(CompileError, match=re.escape(message)):
        lower(spec)


def test_top_k_must_be_an_integer_literal() -> None:
    data = base("dict_outputs")
    data["metrics"]["accuracy"] = {
        "fn": "top_k_accuracy",
        "args": {"logits": "outputs.mean", "labels": "batch.label", "k": "batch.k"},
    }
    with pytest.raises(CompileError, match="k must be a positive integer written in the spec"):
        lower(Spec.model_validate(data))
