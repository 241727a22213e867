"""`beagle check`'s trace: the generated steps under `jax.eval_shape`, no FLOPs spent.

The trace runs on the real model, one real batch and the state shapes that batch gives.
It goes in stages so that a failure points at the spec entry involved:

1. every `batch.<key>` reference names a key the data source gives (`model.input`, loss
   and metric arguments);
2. the model initialises and runs on its inputs (`model.input`, `model.args`);
3. what the model returns matches `model.outputs` (one array, a tuple, a dict);
4. the arguments of built-in losses and metrics have shapes that fit each other (the
   `args` entry to change);
5. `train_step` and `val_step` trace (anything else, e.g. a user function that raises).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beagle.catalog import LOSSES, METRICS
from beagle.spec import LoadedSpec, Problem, SpecError
from beagle.spec.problems import did_you_mean

__all__ = ["trace_spec"]

# Built-ins whose two arguments must have the same shape, and those taking integer labels.
_SAME_SHAPE = {"mse", "mae", "huber", "softmax_cross_entropy_onehot",
               "sigmoid_binary_cross_entropy", "gaussian_kl"}  # fmt: skip
_INTEGER_LABELS = {"softmax_cross_entropy", "accuracy", "top_k_accuracy"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _batch_references(loaded: LoadedSpec) -> list[tuple[tuple[str | int, ...], str]]:
    spec = loaded.spec
    refs: list[tuple[tuple[str | int, ...], str]] = []
    inputs = spec.model.input
    if isinstance(inputs, str):
        refs.append((("model", "input"), inputs))
    else:
        refs.extend((("model", "input", i), ref) for i, ref in enumerate(inputs))
    for section, terms in (("losses", spec.losses), ("metrics", spec.metrics)):
        for name, term in terms.items():
            for arg, value in term.args.items():
                if isinstance(value, str):
                    refs.append(((section, name, "args", arg), value))
    return refs


def _check_batch_keys(loaded: LoadedSpec, batch: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for where, ref in _batch_references(loaded):
        if ref.startswith("batch."):
            key = ref.removeprefix("batch.")
            if key not in batch:
                problems.append(
                    loaded.problem(
                        where,
                        f"the batch has no key {key!r}",
                        did_you_mean(key, list(batch), "the data source gives"),
                    )
                )
    return problems


def _named_outputs(loaded: LoadedSpec, result: Any) -> dict[str, Any]:
    """Map the model's return value to output names, or raise a problem at `model.outputs`."""
    import jax

    declared = loaded.spec.model.outputs
    where: tuple[str | int, ...] = ("model", "outputs")

    def describe(value: Any) -> str:
        if isinstance(value, jax.ShapeDtypeStruct):
            return f"one array of shape {tuple(value.shape)}"
        if isinstance(value, tuple | list):
            return f"a {type(value).__name__} of {len(value)} items"
        if isinstance(value, Mapping):
            return f"a dict with keys {', '.join(map(str, value))}"
        return f"a {type(value).__name__}"

    if isinstance(declared, str):
        if not isinstance(result, jax.ShapeDtypeStruct):
            raise SpecError(
                [
                    loaded.problem(
                        where,
                        f"the model returns {describe(result)}, not one array",
                        "name each item: a list for a tuple, a mapping for a dict",
                    )
                ]
            )
        return {declared: result}
    if isinstance(declared, list):
        if not isinstance(result, tuple | list) or len(result) != len(declared):
            raise SpecError(
                [
                    loaded.problem(
                        where,
                        f"{len(declared)} outputs are named but the model "
                        f"returns {describe(result)}",
                    )
                ]
            )
        return dict(zip(declared, result, strict=True))
    if not isinstance(result, Mapping):
        raise SpecError(
            [
                loaded.problem(
                    where, f"outputs name dict keys but the model returns {describe(result)}"
                )
            ]
        )
    named = {}
    for key, name in declared.items():
        if key not in result:
            raise SpecError(
                [
                    loaded.problem(
                        (*where, key),
                        f"the model's dict has no key {key!r}",
                        did_you_mean(key, [str(k) for k in result], "it returns"),
                    )
                ]
            )
        named[name] = result[key]
    return named


def _check_term_shapes(
    loaded: LoadedSpec, outputs: Mapping[str, Any], batch: Mapping[str, Any]
) -> list[Problem]:
    import jax.numpy as jnp

    problems = []
    spec = loaded.spec
    for section, terms, catalog in (
        ("losses", spec.losses, LOSSES),
        ("metrics", spec.metrics, METRICS),
    ):
        for name, term in terms.items():
            builtin = catalog.get(term.fn)
            if builtin is None or len(builtin.params) < 2:
                continue
            first, second = builtin.params[0], builtin.params[1]
            values = {}
            for arg in (first, second):
                ref = term.args.get(arg)
                if not isinstance(ref, str) or ref == "params":
                    break
                kind, _, key = ref.partition(".")
                source = outputs if kind == "outputs" else batch
                if key not in source:
                    break
                values[arg] = source[key]
            else:
                a, b = values[first], values[second]
                where = (section, name, "args", second)
                if term.fn in _SAME_SHAPE and tuple(a.shape) != tuple(b.shape):
                    problems.append(
                        loaded.problem(
                            where,
                            f"{section[:-1]} {name!r}: {first} ({term.args[first]}) has shape "
                            f"{tuple(a.shape)} but {second} ({term.args[second]}) has shape "
                            f"{tuple(b.shape)}; {term.fn} needs the same shape",
                        )
                    )
                elif term.fn in _INTEGER_LABELS:
                    if tuple(b.shape) != tuple(a.shape[:-1]):
                        problems.append(
                            loaded.problem(
                                where,
                                f"{section[:-1]} {name!r}: {second} ({term.args[second]}) has "
                                f"shape {tuple(b.shape)} but {first} ({term.args[first]}) has "
                                f"shape {tuple(a.shape)}; {term.fn} needs integer labels of "
                                f"shape {tuple(a.shape[:-1])}",
                                "for one-hot labels use softmax_cross_entropy_onehot"
                                if tuple(b.shape) == tuple(a.shape)
                                else None,
                            )
                        )
                    elif not jnp.issubdtype(b.dtype, jnp.integer):
                        problems.append(
                            loaded.problem(
                                where,
                                f"{section[:-1]} {name!r}: {term.fn} needs integer labels, "
                                f"but {term.args[second]} is {b.dtype}",
                            )
                        )
    return problems


def _term_in_message(loaded: LoadedSpec, message: str) -> tuple[str | int, ...] | None:
    spec = loaded.spec
    for section, terms in (("losses", spec.losses), ("metrics", spec.metrics)):
        for name in terms:
            if f"{section}.{name}" in message or f"'{name}'" in message or f" {name}:" in message:
                return (section, name)
    return None


def trace_spec(loaded: LoadedSpec) -> list[Problem]:
    """Trace the spec's generated steps with `jax.eval_shape`; the problems found, if any."""
    try:
        return _trace(loaded)
    except SpecError as error:
        return list(error.problems)


def _trace(loaded: LoadedSpec) -> list[Problem]:
    import jax

    from beagle.compiler import compile_spec
    from beagle.runner import wiring
    from beagle.training import TrainState

    spec = loaded.spec
    text = compile_spec(spec, loaded.source_name)
    module = wiring.import_module_from_text(
        text, f"_beagle_trace_{spec.name}", f"<beagle check: {spec.name}>"
    )
    plan = wiring.plan_data(loaded)
    batch = {key: jax.ShapeDtypeStruct(v.shape, v.dtype) for key, v in plan.sample.items()}
    problems = _check_batch_keys(loaded, batch)
    if problems:
        return problems
    model = wiring.build_model(loaded)
    init_key, loop_key = wiring.root_keys(spec.seed)
    inputs = wiring.model_inputs(loaded, batch)
    rngs = wiring.init_rngs(loaded, init_key)
    input_where: tuple[str | int, ...] = ("model", "input")
    try:
        variables = jax.eval_shape(
            lambda r, xs: model.init(r, *xs, **wiring.model_kwargs(loaded, train=False)),
            rngs,
            inputs,
        )
    except Exception as error:  # the model cannot run on these inputs
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        return [
            loaded.problem(
                input_where,
                f"the model cannot be initialised on inputs of shape {shapes}: "
                f"{_first_line(error)}",
            )
        ]
    wiring.check_collections(loaded, variables)
    mutable = ["batch_stats"] if spec.model.batch_norm else False
    step_rngs = {name: rngs[name] for name in spec.model.rngs}
    try:
        applied = jax.eval_shape(
            lambda v, xs: model.apply(
                v, *xs, **wiring.model_kwargs(loaded, train=True), mutable=mutable, rngs=step_rngs
            ),
            variables,
            inputs,
        )
    except Exception as error:
        return [
            loaded.problem(input_where, f"the model fails in training mode: {_first_line(error)}")
        ]
    result = applied[0] if mutable else applied
    outputs = _named_outputs(loaded, result)
    problems = _check_term_shapes(loaded, outputs, batch)
    if problems:
        return problems
    extra = {"batch_stats": variables["batch_stats"]} if spec.model.batch_norm else {}
    state = jax.eval_shape(
        lambda v, e: TrainState.create(
            apply_fn=model.apply, params=v["params"], tx=module.make_optimizer(), **e
        ),
        variables,
        extra,
    )
    k = spec.train.steps_per_call
    for step_name in ("train_step", "val_step"):
        fn = getattr(module, step_name)
        if step_name == "train_step" and k > 1:
            step_batch: Any = {
                key: jax.ShapeDtypeStruct((k, *v.shape), v.dtype) for key, v in batch.items()
            }
            keys = jax.eval_shape(lambda key: jax.random.split(key, k), loop_key)
        else:
            step_batch, keys = batch, jax.eval_shape(lambda key: key, loop_key)
        try:
            jax.eval_shape(fn, state, step_batch, keys)
        except SpecError:
            raise
        except Exception as error:
            message = _first_line(error)
            where = _term_in_message(loaded, str(error)) or ("losses",)
            problems.append(loaded.problem(where, f"tracing {step_name} failed: {message}"))
            break
    return problems
