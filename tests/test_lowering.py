"""Lowering decides, the templates only loop: the decisions as `ModuleIR` fields.

Each test reads what `lower(...)` decided for a spec (the optimizer wrapper, the
`apply_gradients` keywords, `terms` or `_`, the model call's targets, the helpers and the
terms' names), so a decision is tested as Python rather than through rendered text. The
golden modules (tests/test_goldens.py) then show that the templates paste these fields
byte for byte as they used to decide them themselves.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from pathlib import Path

import pytest

from beagle import catalog
from beagle.compiler import CompileError, lower, render_module
from beagle.compiler.ir import ModuleIR
from beagle.spec import Spec, load_spec
from beagle.spec.models import IDENTIFIER_PATTERN, IMPORT_PATH_PATTERN, NAME_PATTERN

ROOT = Path(__file__).resolve().parents[1]


def lowered(name: str, *overrides: str) -> ModuleIR:
    loaded = load_spec(ROOT / "specs" / f"{name}.yaml", overrides, imports="none")
    return lower(loaded.spec, loaded.source_name)


def test_gradient_accumulation_is_a_wrapper_lowering_writes() -> None:
    ir = lowered("regression_mlp", "optimizer.accumulate=4")
    assert ir.optimizer.wrapper == (
        "optax.MultiSteps(optimizer, every_k_schedule=4).gradient_transformation()"
    )
    assert "accumulated over 4 steps" in ir.optimizer.docstring
    assert lowered("regression_mlp").optimizer.wrapper is None


def test_batch_norm_decides_the_update_keywords_and_the_training_call_targets() -> None:
    with_stats = lowered("digits_cnn")
    assert with_stats.step.update_call == (
        "state.apply_gradients(grads=grads, batch_stats=batch_stats)"
    )
    assert with_stats.model.train_call.targets == "model_out, updates"
    assert with_stats.model.eval_call.targets == "model_out"
    plain = lowered("digits_cnn", "model.batch_norm=false", "model.args.batch_norm=false")
    assert plain.step.update_call == "state.apply_gradients(grads=grads)"
    assert plain.model.train_call.targets == plain.model.eval_call.targets == "model_out"


def test_terms_are_unpacked_only_when_several_are_reported() -> None:
    one = lowered("regression_mlp")
    assert (one.losses.report_terms, one.losses.unpack_target) == (False, "_")
    several = lowered("vae")
    assert (several.losses.report_terms, several.losses.unpack_target) == (True, "terms")


def test_terms_carry_their_spec_names() -> None:
    loaded = load_spec(ROOT / "specs" / "classifier_metrics.yaml", imports="none")
    ir = lower(loaded.spec)
    assert [t.name for t in ir.losses.terms] == list(loaded.spec.losses)
    assert [t.name for t in ir.metrics] == list(loaded.spec.metrics)
    assert all(t.key == repr(t.name) for t in (*ir.losses.terms, *ir.metrics))


def test_helpers_follow_the_catalog_order_and_each_renders_its_own_macro() -> None:
    ir = lowered("vae")  # mse (check_same_shape) and gaussian_kl
    assert ir.helpers == ("check_same_shape", "gaussian_kl")
    for name in catalog.HELPERS:
        text = render_module(dataclasses.replace(ir, helpers=(name,)))
        defined = re.findall(r"^def (\w+)\(", text, re.MULTILINE)
        assert name in defined and not set(catalog.HELPERS) - {name} & set(defined)


PROBES = [
    "a", "A", "_", "a1", "snake_case", "1a", "a-b", "a b", "é", "aé", "a\n", "\na", "",
    "class", "mod:Cls", "Mod:Cls", "a.b:C", "a.b:C.d", "a:b:c", "a.:b", ":b", "a.b", "a:",
    "a.b:C\n", "a.b:C ", "pkg.mod:Attr_1",
]  # fmt: skip


def _matches(pattern: str, text: str) -> bool:
    parts = text.replace(":", ".").split(".")
    return re.fullmatch(pattern, text) is not None and not any(map(keyword.iskeyword, parts))


@pytest.mark.parametrize("probe", PROBES)
def test_the_compilers_doors_take_exactly_what_the_front_ends_patterns_take(probe: str) -> None:
    """One regex for each kind of name: lowering checks the front end's own patterns."""
    spec = load_spec(ROOT / "specs" / "regression_mlp.yaml", imports="none").spec
    cases: list[tuple[Spec, str]] = [
        (spec.model_copy(update={"name": probe}), NAME_PATTERN),
        (
            spec.model_copy(update={"model": spec.model.model_copy(update={"class_path": probe})}),
            IMPORT_PATH_PATTERN,
        ),
        (
            spec.model_copy(update={"model": spec.model.model_copy(update={"args": {probe: 1}})}),
            IDENTIFIER_PATTERN,
        ),
    ]
    for changed, pattern in cases:
        try:
            lower(changed)
        except CompileError:
            accepted = False
        else:
            accepted = True
        assert accepted == _matches(pattern, probe), (pattern, probe)
