"""The compiler's own line of defence: hostile strings fed to `lower` directly.

Validation rejects these strings before the compiler runs, so `tests/test_injection.py`
rarely reaches the compiler's re-checks. Here each string is put into a spec that was
validated first and then changed without validation (`model_copy`), in every string slot
`lower` reads, and `lower` must refuse it with its own `CompileError`. A benign value in
the same slot lowers, so the refusal is the hostile string's doing.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from beagle.compiler import CompileError, lower
from beagle.spec import Spec
from beagle.spec.models import ScheduleSpec

MAIN: dict[str, Any] = {
    "version": 1,
    "name": "probe",
    "model": {
        "class": "pkg.models:Net",
        "args": {"hidden": 8},
        "input": ["batch.x", "batch.mask"],
        "batch_norm": True,
        "train_flag": "train",
        "rngs": ["dropout", "noise"],
        "outputs": {"pred": "pred", "aux": "aux_out"},  # `aux_out` is referenced nowhere
    },
    "data": {"source": "python", "train": "pkg.data:train", "batch_size": 4},
    "optimizer": {
        "name": "adamw",
        "learning_rate": {"schedule": "linear_schedule", "init_value": 0.1, "end_value": 0.0,
                          "transition_steps": 10},
        "args": {"weight_decay": 0.01},
    },
    "losses": {
        "mse": {"fn": "mse", "args": {"predictions": "outputs.pred", "targets": "batch.y"}},
        "custom": {"fn": "pkg.losses:focal", "args": {"logits": "outputs.pred", "gamma": 2.0}},
    },
    "metrics": {
        "acc": {"fn": "accuracy", "args": {"logits": "outputs.pred", "labels": "batch.label"}},
        "mine": {"fn": "pkg.metrics:mine", "args": {"values": "batch.v", "scale": 2}},
    },
    "train": {"epochs": 1},
}  # fmt: skip

# Variants whose single slot is the model's outputs as a list or a string; their only
# loss reads `params`, so renaming an output breaks no reference.
_PARAMS_ONLY = {"decay": {"fn": "l2", "args": {"tree": "params"}}}
LIST_OUTPUTS = {**copy.deepcopy(MAIN), "losses": _PARAMS_ONLY, "metrics": {}}
LIST_OUTPUTS["model"] = {**MAIN["model"], "outputs": ["pred", "aux_out"]}
STR_OUTPUTS = {**copy.deepcopy(MAIN), "losses": _PARAMS_ONLY, "metrics": {}}
STR_OUTPUTS["model"] = {**MAIN["model"], "outputs": "pred"}
BASES = {"main": MAIN, "list_outputs": LIST_OUTPUTS, "str_outputs": STR_OUTPUTS}

EVIL = [
    "x); import os; os.system('rm -rf /') #",
    "x\"]; __import__('os').system('echo pwned'); x[\"",
    "__import__('os')",
    "a.b",
    'a"b',
    "a'b",
    "a\nb",
    "a\n",
    "a b",
    "a-b",
    "a\x00",
    "",
    "1a",
    "class",
    "None",
    "lambda",
    "ｅval",  # fullwidth e
    "paramѕ",  # Cyrillic s
]
NO_DOT = [text for text in EVIL if "." not in text]

# What each kind of slot holds, and how a hostile name is dressed to pass any outer check.
FORMS: dict[str, list[str]] = {
    "identifier": EVIL,
    "module name": [*EVIL, "Probe", "probe-1"],
    "reference": [*EVIL, *(f"batch.{t}" for t in EVIL), *(f"outputs.{t}" for t in EVIL),
                  "params.x", "batch", "outputs."],
    "batch reference": [*EVIL, *(f"batch.{t}" for t in EVIL), "outputs.pred", "params"],
    "import path": [*EVIL, *(f"pkg.mod:{t}" for t in NO_DOT), *(f"{t}:Net" for t in NO_DOT),
                    *(f"pkg.{t}:Net" for t in NO_DOT), "pkg.class:Net", "pkg.mod:Net.None",
                    "pkg.mod:Net:x", "pkg.mod"],
    "loss": [*EVIL, "pkg.mod:(x)", "mse()"],
    "optimizer": [*EVIL, "adam()", "adam; import os", "__import__"],
    "schedule": [*EVIL, "linear_schedule()", "__import__"],
}  # fmt: skip
BENIGN = {
    "identifier": "fine",
    "module name": "fine",
    "reference": "batch.fine",
    "batch reference": "batch.fine",
    "import path": "pkg.fine:Thing",
    "loss": "mae",
    "optimizer": "sgd",
    "schedule": "cosine_decay_schedule",
}

# (base, path, rename, form): `rename` replaces the key at the end of `path`, not its value.
Slot = tuple[str, tuple[str | int, ...], bool, str]
SLOTS: list[Slot] = [
    ("main", ("name",), False, "module name"),
    ("main", ("model", "class_path"), False, "import path"),
    ("main", ("model", "args", "hidden"), True, "identifier"),
    ("main", ("model", "input", 0), False, "batch reference"),
    ("main", ("model", "input", 1), False, "batch reference"),
    ("main", ("model", "train_flag"), False, "identifier"),
    ("main", ("model", "rngs", 0), False, "identifier"),
    ("main", ("model", "rngs", 1), False, "identifier"),
    ("main", ("model", "outputs", "aux"), True, "identifier"),
    ("main", ("model", "outputs", "aux"), False, "identifier"),
    ("main", ("optimizer", "name"), False, "optimizer"),
    ("main", ("optimizer", "learning_rate", "schedule"), False, "schedule"),
    ("main", ("optimizer", "learning_rate", "init_value"), True, "identifier"),
    ("main", ("optimizer", "args", "weight_decay"), True, "identifier"),
    ("main", ("losses", "mse"), True, "identifier"),
    ("main", ("losses", "mse", "fn"), False, "loss"),
    ("main", ("losses", "mse", "args", "predictions"), False, "reference"),
    ("main", ("losses", "mse", "args", "targets"), False, "reference"),
    ("main", ("losses", "custom"), True, "identifier"),
    ("main", ("losses", "custom", "fn"), False, "import path"),
    ("main", ("losses", "custom", "args", "logits"), True, "identifier"),
    ("main", ("losses", "custom", "args", "gamma"), True, "identifier"),
    ("main", ("losses", "custom", "args", "logits"), False, "reference"),
    ("main", ("metrics", "acc"), True, "identifier"),
    ("main", ("metrics", "acc", "args", "labels"), False, "reference"),
    ("main", ("metrics", "mine"), True, "identifier"),
    ("main", ("metrics", "mine", "fn"), False, "import path"),
    ("main", ("metrics", "mine", "args", "values"), True, "identifier"),
    ("main", ("metrics", "mine", "args", "values"), False, "reference"),
    ("list_outputs", ("model", "outputs", 1), False, "identifier"),
    ("str_outputs", ("model", "outputs"), False, "identifier"),
]


def _slot_id(slot: Slot) -> str:
    base, path, rename, _ = slot
    return f"{base}:{'.'.join(map(str, path))}{' (key)' if rename else ''}"


def put(node: Any, path: tuple[str | int, ...], value: Any, rename: bool) -> Any:
    """A copy of `node` with `value` at `path` (or as the key there), never validated."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, ScheduleSpec) and rename and not rest:
        extra = {(value if k == head else k): v for k, v in (node.model_extra or {}).items()}
        return ScheduleSpec.model_construct(schedule=node.schedule, **extra)
    if isinstance(node, dict):
        if rename and not rest:
            return {(value if k == head else k): v for k, v in node.items()}
        return {k: (put(v, rest, value, rename) if k == head else v) for k, v in node.items()}
    if isinstance(node, list):
        return [put(v, rest, value, rename) if i == head else v for i, v in enumerate(node)]
    assert isinstance(node, BaseModel), (node, path)
    field = str(head)
    return node.model_copy(update={field: put(getattr(node, field), rest, value, rename)})


def spec_with(slot: Slot, text: str) -> Spec:
    base, path, rename, _ = slot
    spec = Spec.model_validate(BASES[base])  # valid; the change below skips validation
    changed = put(spec, path, text, rename)
    assert isinstance(changed, Spec)
    return changed


def test_every_slot_reaches_the_field_it_names() -> None:
    for slot in SLOTS:
        base, path, rename, _ = slot
        spec = spec_with(slot, "marker_text")
        node: Any = spec
        for part in path[:-1]:
            node = node[part] if isinstance(node, dict | list) else getattr(node, str(part))
        last = path[-1]
        if rename:
            keys = node.model_extra if isinstance(node, ScheduleSpec) else node
            assert "marker_text" in keys and last not in keys, slot
        elif isinstance(node, dict | list):
            assert node[last] == "marker_text", slot
        else:
            assert getattr(node, str(last)) == "marker_text", slot


@pytest.mark.parametrize("slot", SLOTS, ids=_slot_id)
def test_a_benign_value_in_the_slot_lowers(slot: Slot) -> None:
    assert lower(spec_with(slot, BENIGN[slot[3]])).header.spec_name


@pytest.mark.parametrize("slot", SLOTS, ids=_slot_id)
def test_lowering_refuses_every_hostile_string_in_the_slot(slot: Slot) -> None:
    accepted = []
    for text in FORMS[slot[3]]:
        try:
            lower(spec_with(slot, text))
        except CompileError:
            continue
        accepted.append(text)
    assert not accepted, f"lower() accepted {accepted!r} in {_slot_id(slot)}"
