"""Checks that relate one field of a spec to another, made without importing anything.

They run on the plain document (not on a validated `Spec`) so that they report alongside
the structural problems of the same file: every check looks only at the fields it needs
and skips any that are malformed (those already have a structural problem). Each problem
points at the one field to change: a metric named like a loss at the metric's key, a
repeated output name at `outputs`, a reference to an undeclared output at the reference.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

from beagle import catalog
from beagle.spec.loader import Locator
from beagle.spec.models import IDENTIFIER_PATTERN, REFERENCE_PATTERN
from beagle.spec.problems import Problem, choices_hint, closest, did_you_mean
from beagle.spec.validate import show_value

__all__ = ["check_semantics", "history_keys"]


def _is_identifier(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and re.fullmatch(IDENTIFIER_PATTERN, value) is not None


def _section(doc: dict[str, Any], *keys: str) -> Any:
    value: Any = doc
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _quoted(names: Any) -> str:
    names = list(names)
    if len(names) <= 1:
        return "".join(f"'{n}'" for n in names)
    return ", ".join(f"'{n}'" for n in names[:-1]) + f" and '{names[-1]}'"


def declared_outputs(doc: dict[str, Any]) -> list[str]:
    """The output names the model declares (`model.outputs`, default `outputs`)."""
    model = doc.get("model")
    outputs = model.get("outputs", "outputs") if isinstance(model, dict) else "outputs"
    if isinstance(outputs, str):
        return [outputs]
    if isinstance(outputs, list):
        return [o for o in outputs if isinstance(o, str)]
    if isinstance(outputs, dict):
        return [o for o in outputs.values() if isinstance(o, str)]
    return []


def _entries(doc: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    value = doc.get(section)
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if _is_identifier(k) and isinstance(v, dict)}


def history_keys(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(train keys, val keys) of the history `train_loop` returns for this spec."""
    losses = list(_entries(doc, "losses"))
    metrics = list(_entries(doc, "metrics"))
    names = ["loss", *(losses if len(losses) > 1 else []), *metrics]
    train = [f"train_{n}" for n in names]
    if _section(doc, "precision", "compute") == "float16":
        # A non-finite gradient is an overflow then, whatever `nan` says.
        train.append("train_loss_scale_skips")
    elif _section(doc, "train", "nan") == "skip":
        train.append("train_skipped_steps")
    val = [f"val_{n}" for n in names] if isinstance(doc.get("validation"), dict) else []
    return train, val


def check_semantics(doc: dict[str, Any], locator: Locator) -> list[Problem]:
    """Every cross-field problem of a (possibly malformed) plain spec document."""
    checks = (
        _check_model,
        _check_data,
        _check_terms,
        _check_names,
        _check_optimizer,
        _check_train,
        _check_parallel,
        _check_history_metrics,
    )
    return [problem for check in checks for problem in check(doc, locator)]


def _check_model(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    model = doc.get("model")
    if not isinstance(model, dict):
        return
    outputs = model.get("outputs")
    names = (
        outputs
        if isinstance(outputs, list)
        else list(outputs.values())
        if isinstance(outputs, dict)
        else []
    )
    repeated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if repeated:
        yield loc.problem(
            ("model", "outputs"),
            f"output name {_quoted(repeated)} is given more than once",
            "each output needs a name of its own",
            at="key",
        )
    needs = [key for key in ("batch_norm", "rngs") if model.get(key)]
    if model.get("kind") == "nnx":
        if "train_flag" in model:
            yield loc.problem(
                ("model", "train_flag"),
                "train_flag does not apply to an nnx model: the generated steps switch "
                "its mode with train() and eval()",
                "remove train_flag",
                at="key",
            )
    elif needs and "train_flag" in model and model["train_flag"] is None:
        what = " and ".join("batch_norm: true" if k == "batch_norm" else "rngs" for k in needs)
        yield loc.problem(
            ("model", "train_flag"),
            f"{what} need{'s' if len(needs) == 1 and needs[0] == 'batch_norm' else ''} "
            "a train_flag",
            "set train_flag to the keyword through which your model learns whether it is "
            "training, e.g. 'train'",
        )
    rngs = model.get("rngs")
    if isinstance(rngs, list):
        seen: set[str] = set()
        for index, stream in enumerate(rngs):
            if not isinstance(stream, str):
                continue
            if stream == "params":
                yield loc.problem(
                    ("model", "rngs", index),
                    "'params' is the parameter initialisation stream and is always provided",
                    "list only the streams the model draws on in training, e.g. 'dropout'",
                )
            elif stream in seen:
                yield loc.problem(("model", "rngs", index), f"RNG stream '{stream}' is named twice")
            seen.add(stream)
    args = model.get("args")
    if isinstance(doc.get("precision"), dict) and isinstance(args, dict):
        for key in ("dtype", "param_dtype"):
            if key in args:
                yield loc.problem(
                    ("model", "args", key),
                    f"precision sets {key}; model.args must not",
                    "remove it from model.args (precision.compute decides the dtypes)",
                    at="key",
                )
    inputs = model.get("input")
    if isinstance(inputs, list):
        for position, ref in enumerate(inputs):
            yield from _check_batch_reference(doc, ref, ("model", "input", position), loc)
    else:
        yield from _check_batch_reference(doc, inputs, ("model", "input"), loc)


def _check_batch_reference(
    doc: dict[str, Any], ref: Any, path: tuple[str | int, ...], loc: Locator
) -> Iterator[Problem]:
    if not isinstance(ref, str) or not ref.startswith("batch."):
        return
    source = _section(doc, "data", "source")
    builtin = catalog.SOURCES.get(source) if isinstance(source, str) else None
    keys = builtin.batch_keys if builtin is not None else None
    key = ref[len("batch.") :]
    if keys is None or key in keys or not _is_identifier(key):
        return
    near = closest(key, keys, n=1)
    yield loc.problem(
        path,
        f"{show_value(ref)}: data source '{source}' has no batch key '{key}'",
        (
            f"did you mean 'batch.{near[0]}'?"
            if near
            else f"its batches have the keys {_quoted(keys)}"
        ),
    )


def _check_data(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    data = doc.get("data")
    if not isinstance(data, dict):
        return
    source = data.get("source")
    validation = doc.get("validation")
    train = doc.get("train")
    val_fraction, test_fraction = data.get("val_fraction", 0.2), data.get("test_fraction")
    fractions = [
        f
        for f in (val_fraction, test_fraction)
        if isinstance(f, (int, float)) and not isinstance(f, bool)
    ]
    if len(fractions) == 2 and 0 < fractions[1] < 1 and 0 <= fractions[0] < 1:
        if sum(fractions) >= 1:
            yield loc.problem(
                ("data", "test_fraction"),
                f"val_fraction {val_fraction} and test_fraction {test_fraction} add up to "
                f"{sum(fractions):g}, which leaves no training examples",
                "the two held-out shares must add up to less than 1",
            )
    if source == "python":
        if isinstance(train, dict) and "batches_per_epoch" not in train:
            yield loc.problem(
                ("train", "batches_per_epoch"),
                "missing required key 'batches_per_epoch': data source 'python' has no "
                "known length",
                "say how many batches make an epoch",
                shown_path=("train",),
            )
        if isinstance(validation, dict) and "batches" not in validation:
            yield loc.problem(
                ("validation", "batches"),
                "missing required key 'batches': data source 'python' has no known length",
                "say how many batches one validation reads",
                shown_path=("validation",),
            )
    if isinstance(validation, dict):  # `validation: null` is no validation, as absent
        builtin = catalog.SOURCES.get(source) if isinstance(source, str) else None
        held_out = source == "images" and bool(data.get("val_fraction"))
        if (
            builtin is not None
            and not builtin.holds_out_val
            and data.get("val") is None
            and not held_out
        ):
            yield loc.problem(
                ("validation",),
                f"validation needs validation data, and data source '{source}' has no 'val'",
                "set data.val"
                + (" or data.val_fraction" if source == "images" else "")
                + ", or remove the validation section",
                at="key",
            )
        if builtin is not None and builtin.holds_out_val and data.get("val_fraction") == 0:
            yield loc.problem(
                ("data", "val_fraction"),
                "validation needs held-out examples, but val_fraction is 0",
                "set val_fraction above 0 (default 0.2), or remove the validation section",
            )


def _check_terms(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    outputs = declared_outputs(doc)
    for section, table, other, kind in (
        ("losses", catalog.LOSSES, catalog.METRICS, "loss"),
        ("metrics", catalog.METRICS, catalog.LOSSES, "metric"),
    ):
        for name, entry in _entries(doc, section).items():
            path = (section, name)
            fn = entry.get("fn")
            builtin = None
            if _is_identifier(fn):
                builtin = table.get(fn)
                if builtin is None:
                    if fn in other:
                        hint = choices_hint(
                            table, f"built-in {kind}es" if kind == "loss" else f"built-in {kind}s"
                        )
                        yield loc.problem(
                            (*path, "fn"),
                            f"'{fn}' is a built-in {'metric' if kind == 'loss' else 'loss'}, "
                            f"not a {kind}",
                            hint,
                        )
                    else:
                        hint = did_you_mean(
                            fn, table, f"built-in {'losses' if kind == 'loss' else 'metrics'}"
                        )
                        if hint and not hint.startswith("did you mean"):
                            hint += "; or a function of your own as 'package.module:function'"
                        yield loc.problem((*path, "fn"), f"unknown built-in {kind} '{fn}'", hint)
            args = entry.get("args")
            args = args if isinstance(args, dict) else {}
            if builtin is not None:
                for arg, value in args.items():
                    if arg not in builtin.params:
                        yield loc.problem(
                            (*path, "args", arg),
                            f"unknown argument '{arg}' of built-in {kind} '{builtin.name}'",
                            did_you_mean(arg, builtin.params, "its arguments"),
                            at="key",
                            shown_path=(*path, "args"),
                        )
                    elif (literal := catalog.LITERAL_ARGS.get(arg)) is not None:
                        ok = (
                            isinstance(value, int) and not isinstance(value, bool) and value >= 1
                            if literal.integer
                            else _is_number(value) and value > 0
                        )
                        if not ok:
                            yield loc.problem(
                                (*path, "args", arg),
                                f"expected {literal.words}, got {show_value(value)}",
                            )
                    elif isinstance(value, (bool, int, float, list)):
                        yield loc.problem(
                            (*path, "args", arg),
                            f"argument '{arg}' of '{builtin.name}' takes a reference "
                            f"('outputs.<name>' or 'batch.<key>'), got {show_value(value)}",
                        )
                unknown = [a for a in args if a not in builtin.params]
                missing = [
                    p
                    for p in builtin.required
                    if p not in args and not any(p in closest(a, [p]) for a in unknown)
                ]
                if missing:
                    where = (*path, "args") if "args" in entry else path
                    yield loc.problem(
                        where,
                        f"built-in {kind} '{builtin.name}' needs "
                        f"argument{'s' if len(missing) > 1 else ''} {_quoted(missing)}",
                        f"its arguments: {_quoted(builtin.params)}",
                        at="key",
                    )
            for arg, value in args.items():
                yield from _check_reference(doc, value, (*path, "args", arg), outputs, loc)


def _check_reference(
    doc: dict[str, Any], value: Any, path: tuple[str | int, ...], outputs: list[str], loc: Locator
) -> Iterator[Problem]:
    if not isinstance(value, str) or re.fullmatch(REFERENCE_PATTERN, value) is None:
        return
    if value.startswith("outputs."):
        name = value[len("outputs.") :]
        if not outputs:  # model.outputs is empty or malformed: a problem of its own already
            return
        if name not in outputs:
            near = closest(name, outputs, n=1)
            declared = f"declared outputs: {_quoted(dict.fromkeys(outputs))}"
            hint = f"did you mean 'outputs.{near[0]}'? ({declared})" if near else declared
            yield loc.problem(path, f"{show_value(value)} is not a declared model output", hint)
    elif value.startswith("batch."):
        yield from _check_batch_reference(doc, value, path, loc)


def _check_names(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    losses = _entries(doc, "losses")
    raw_losses = doc.get("losses")
    for name in losses:
        if name == "skipped_steps" or name == "loss" and len(losses) > 1:
            yield loc.problem(
                ("losses", name),
                f"a loss may not be called '{name}': the history reports "
                + ("the weighted sum of the losses" if name == "loss" else "skipped steps")
                + " under that name",
                "give it another name",
                at="key",
            )
    raw_metrics = doc.get("metrics")
    if not isinstance(raw_metrics, dict):
        return
    loss_names = set(raw_losses) if isinstance(raw_losses, dict) else set()
    for name in raw_metrics:
        if name in catalog.RESERVED_METRIC_NAMES:
            yield loc.problem(
                ("metrics", name),
                f"a metric may not be called '{name}': the history reports "
                + ("the weighted sum of the losses" if name == "loss" else "skipped steps")
                + " under that name",
                "give it another name",
                at="key",
            )
        elif name in loss_names:
            yield loc.problem(
                ("metrics", name),
                f"metric '{name}' has the name of a loss; losses and metrics share the history",
                "give the metric another name",
                at="key",
            )


def _check_optimizer(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    optimizer = doc.get("optimizer")
    if not isinstance(optimizer, dict):
        return
    name = optimizer.get("name")
    if _is_identifier(name) and name not in catalog.OPTIMIZERS:
        yield loc.problem(
            ("optimizer", "name"),
            f"unknown optimizer '{name}'",
            did_you_mean(name, catalog.OPTIMIZERS, "optax optimizers"),
        )
    args = optimizer.get("args")
    if isinstance(args, dict) and "learning_rate" in args:
        yield loc.problem(
            ("optimizer", "args", "learning_rate"),
            "the learning rate is not an optimizer argument here",
            "set it as optimizer.learning_rate",
            at="key",
            shown_path=("optimizer", "args"),
        )
    schedule = optimizer.get("learning_rate")
    if not isinstance(schedule, dict):
        return
    path = ("optimizer", "learning_rate")
    schedule_name = schedule.get("schedule")
    if _is_identifier(schedule_name) and schedule_name not in catalog.SCHEDULES:
        yield loc.problem(
            (*path, "schedule"),
            f"unknown schedule '{schedule_name}'",
            did_you_mean(schedule_name, catalog.SCHEDULES, "optax schedules"),
        )
    for key, value in schedule.items():
        if key == "schedule":
            continue
        if not _is_identifier(key) or keyword.iskeyword(key):
            yield loc.problem(
                (*path, key),
                f"{show_value(key)} is not a valid argument name",
                at="key",
                shown_path=path,
            )
        elif not _is_number(value):
            yield loc.problem(
                (*path, key), f"schedule arguments are numbers, got {show_value(value)}"
            )
        elif not math.isfinite(value):
            yield loc.problem((*path, key), f"must be a finite number, got {show_value(value)}")


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_train(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    model_args = _section(doc, "model", "args")
    if isinstance(model_args, dict):
        yield from _check_finite(model_args, ("model", "args"), loc)


def batch_size_problem(
    batch_size: int, devices: int, problem: Callable[..., Problem]
) -> Problem | None:
    """The problem of a global batch that does not split over `devices` (None if it does)."""
    if batch_size % devices == 0:
        return None
    below = batch_size - batch_size % devices
    above = below + devices
    near = f"{below} or {above}" if below else f"{above}"
    return problem(
        ("data", "batch_size"),
        f"batch_size {batch_size} does not divide by the {devices} devices of the "
        "parallel mesh (data x fsdp); each batch is split evenly over them",
        f"the nearest batch sizes that work are {near}",
    )


def _check_parallel(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    """Explicit device counts only (`auto` needs the machine: check and run test it)."""
    parallel = doc.get("parallel")
    if not isinstance(parallel, dict):
        return
    data, fsdp = parallel.get("data", "auto"), parallel.get("fsdp", 1)
    batch = _section(doc, "data", "batch_size")
    if _is_count(data) and _is_count(fsdp) and _is_count(batch):
        problem = batch_size_problem(batch, data * fsdp, loc.problem)
        if problem is not None:
            yield problem


def _check_finite(value: Any, path: tuple[str | int, ...], loc: Locator) -> Iterator[Problem]:
    if isinstance(value, float) and not math.isfinite(value):
        yield loc.problem(path, f"must be a finite number, got {show_value(value)}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _check_finite(item, (*path, key), loc)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _check_finite(item, (*path, index), loc)


def _check_history_metrics(doc: dict[str, Any], loc: Locator) -> Iterator[Problem]:
    train_keys, val_keys = history_keys(doc)
    has_validation = isinstance(doc.get("validation"), dict)
    for path in (("early_stopping", "metric"), ("checkpoint", "best", "metric")):
        metric = _section(doc, *path)
        if not _is_identifier(metric) or metric in train_keys or metric in val_keys:
            continue
        if metric.startswith("val_") and not has_validation:
            name = metric[len("val_") :]
            if f"train_{name}" in train_keys:
                yield loc.problem(
                    path,
                    f"'{metric}' needs validation, and the spec has no validation section",
                    f"add a validation section, or use 'train_{name}'",
                )
                continue
        yield loc.problem(
            path,
            f"'{metric}' is not a history key",
            did_you_mean(metric, train_keys + val_keys, "history keys"),
        )
