"""`beagle check`'s trace: the generated steps under `jax.eval_shape`, no FLOPs spent.

The trace runs on the real model, one real batch and the state shapes that batch gives.
It goes in stages so that a failure points at the spec entry involved:

1. every `batch.<key>` reference names a key the data source gives (`model.input`, loss
   and metric arguments);
2. the model initialises and runs on its inputs (`model.input`, `model.args`);
3. what the model returns matches `model.outputs` (one array, a tuple, a dict);
4. the arguments of built-in losses and metrics have shapes that fit each other (the
   `args` entry to change);
5. each loss term and metric traces on its own and gives a scalar (the `losses.<term>` or
   `metrics.<name>` entry: a user function that raises or returns an array, a built-in
   that cannot run on these arguments);
6. `train_step` and `val_step` trace (anything else).

`beagle run` makes the same checks on the model, data and state it builds anyway, so it
traces nothing twice: `wire` builds them from `beagle.runner.wiring`'s parts and checks
each as `trace_spec` does, in the same order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beagle import catalog
from beagle.runner import wiring
from beagle.spec import LoadedSpec, Problem, SpecError
from beagle.spec.problems import did_you_mean, plural

__all__ = [
    "Wired",
    "check_batch_keys",
    "check_model_call",
    "check_traced",
    "init_problem",
    "trace_spec",
    "wire",
]

_KIND = {"losses": "loss", "metrics": "metric"}


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


def check_batch_keys(loaded: LoadedSpec, batch: Mapping[str, Any]) -> list[Problem]:
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
                        f"{plural(len(declared), 'output is', 'outputs are')} named but "
                        f"the model returns {describe(result)}",
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


def _resolve(
    term: Any, args: tuple[str, ...], outputs: Mapping[str, Any], batch: Mapping[str, Any]
) -> list[Any] | None:
    """The traced values of `term`'s arguments `args`; None if one is not a reference."""
    values = []
    for arg in args:
        ref = term.args.get(arg)
        if not isinstance(ref, str) or ref == "params":
            return None
        kind, _, key = ref.partition(".")
        source = outputs if kind == "outputs" else batch
        if key not in source:
            return None
        values.append(source[key])
    return values


def _check_term_shapes(
    loaded: LoadedSpec, outputs: Mapping[str, Any], batch: Mapping[str, Any]
) -> list[Problem]:
    """The shape and label-kind rules of the built-ins (`catalog.Builtin`), on real shapes."""
    import jax.numpy as jnp

    problems = []
    spec = loaded.spec
    for section, terms, table in (
        ("losses", spec.losses, catalog.LOSSES),
        ("metrics", spec.metrics, catalog.METRICS),
    ):
        for name, term in terms.items():
            builtin = table.get(term.fn)
            if builtin is None:
                continue
            same = builtin.same_shape
            values = _resolve(term, same, outputs, batch) if same else None
            if values is not None:
                shapes = [tuple(value.shape) for value in values]
                if any(shape != shapes[0] for shape in shapes[1:]):
                    first, second = same[0], same[1]
                    problems.append(
                        loaded.problem(
                            (section, name, "args", second),
                            f"{_KIND[section]} {name!r}: {first} ({term.args[first]}) has shape "
                            f"{shapes[0]} but {second} ({term.args[second]}) has shape "
                            f"{shapes[1]}; {term.fn} needs the same shape",
                        )
                    )
                    continue
            if not builtin.integer_labels:
                continue
            scores_arg, labels_arg = builtin.integer_labels
            values = _resolve(term, builtin.integer_labels, outputs, batch)
            if values is None:
                continue
            scores, labels = values
            where = (section, name, "args", labels_arg)
            if tuple(labels.shape) != tuple(scores.shape[:-1]):
                problems.append(
                    loaded.problem(
                        where,
                        f"{_KIND[section]} {name!r}: {labels_arg} ({term.args[labels_arg]}) has "
                        f"shape {tuple(labels.shape)} but {scores_arg} ({term.args[scores_arg]}) "
                        f"has shape {tuple(scores.shape)}; {term.fn} needs integer labels of "
                        f"shape {tuple(scores.shape[:-1])}",
                        "for one-hot labels use softmax_cross_entropy_onehot"
                        if tuple(labels.shape) == tuple(scores.shape)
                        else None,
                    )
                )
            elif not jnp.issubdtype(labels.dtype, jnp.integer):
                problems.append(
                    loaded.problem(
                        where,
                        f"{_KIND[section]} {name!r}: {term.fn} needs integer labels, "
                        f"but {term.args[labels_arg]} is {labels.dtype}",
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


def _check_top_k(
    loaded: LoadedSpec, outputs: Mapping[str, Any], batch: Mapping[str, Any]
) -> list[Problem]:
    """`top_k_accuracy`'s `k` is at most the number of classes its logits have."""
    problems = []
    for name, term in loaded.spec.metrics.items():
        k, ref = term.args.get("k"), term.args.get("logits")
        if term.fn != "top_k_accuracy" or not isinstance(k, int) or not isinstance(ref, str):
            continue
        kind, _, key = ref.partition(".")
        logits = (outputs if kind == "outputs" else batch).get(key)
        if logits is None or not logits.shape:
            continue
        classes = int(logits.shape[-1])
        if k > classes:
            problems.append(
                loaded.problem(
                    ("metrics", name, "args", "k"),
                    f"metric {name!r}: k={k} is more than the {classes} classes of the logits "
                    f"({ref}, shape {tuple(logits.shape)})",
                    f"use a k of at most {classes}",
                )
            )
    return problems


def _user_frame(error: BaseException) -> str | None:
    """`file:line` of the innermost frame of `error`'s traceback outside jax and beagle."""
    import traceback

    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        parts = frame.filename.replace("\\", "/").split("/")
        if any(part in ("jax", "jaxlib", "beagle", "flax", "optax") for part in parts):
            continue
        if frame.filename.startswith("<"):
            continue
        where = f"{frame.filename}:{frame.lineno}"
    return where


def _describe(value: Any) -> str:
    import jax

    if isinstance(value, jax.ShapeDtypeStruct):
        return f"an array of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _check_terms(
    loaded: LoadedSpec,
    module: Any,
    outputs: Mapping[str, Any],
    batch: Mapping[str, Any],
    params: Any,
) -> list[Problem]:
    """Trace every loss term and metric on its own, as the generated module computes it."""
    import jax

    from beagle.compiler import lower

    spec = loaded.spec
    ir = lower(spec, loaded.source_name)
    problems = []
    for section, term_irs, terms in (
        ("losses", ir.losses.terms, spec.losses),
        ("metrics", ir.metrics, spec.metrics),
    ):
        kind = _KIND[section]
        for term_ir in term_irs:
            name = term_ir.name
            term = terms[name]
            body = [*term_ir.shape_checks, f"return {term_ir.expr}"]
            source = "def _term(outputs, batch, params):\n" + "".join(
                f"    {line}\n" for line in body
            )
            namespace = dict(vars(module))
            exec(compile(source, f"<beagle trace: {section}.{name}>", "exec"), namespace)
            user = ":" in term.fn
            try:
                result = jax.eval_shape(namespace["_term"], outputs, batch, params)
            except Exception as error:
                frame = _user_frame(error) if user else None
                problems.append(
                    loaded.problem(
                        (section, name, "fn") if user else (section, name),
                        f"{kind} {name!r}: {term.fn} raised {_first_line(error)}"
                        if user
                        else f"{kind} {name!r}: {term.fn} cannot run on these arguments: "
                        f"{_first_line(error)}",
                        f"raised at {frame}" if frame else None,
                    )
                )
                continue
            if not (isinstance(result, jax.ShapeDtypeStruct) and result.shape == ()):
                problems.append(
                    loaded.problem(
                        (section, name, "fn"),
                        f"{kind} {name!r}: {term.fn} must return a scalar, but it returns "
                        f"{_describe(result)}",
                        "reduce it over the batch, e.g. with .mean()",
                    )
                )
    return problems


def check_model_call(loaded: LoadedSpec, model: Any) -> list[Problem]:
    """The model's `__call__` takes the `train_flag` keyword the spec passes it."""
    import inspect

    flag = loaded.spec.model.train_flag
    if not flag or loaded.spec.model.kind == "nnx":
        return []
    try:
        parameters = inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):  # pragma: no cover - not introspectable: let it run
        return []
    if flag in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        return []
    return [_train_flag_problem(loaded, model, [n for n in parameters if n != "self"])]


def _train_flag_problem(loaded: LoadedSpec, model: Any, takes: list[str]) -> Problem:
    flag = loaded.spec.model.train_flag
    return loaded.problem(
        ("model", "train_flag"),
        f"the model ({type(model).__name__}) is called with {flag}=True/False, but its "
        f"__call__ takes no {flag!r} keyword"
        + (f" (it takes: {', '.join(takes)})" if takes else ""),
        "set model.train_flag: null for a model without a train/eval switch, or to the "
        "name of the keyword that switches it",
    )


# flax's InvalidRngError: `Dropout_0 needs PRNG for "dropout" (https://...)`.
_MISSING_STREAM = re.compile(r'needs PRNG for "([A-Za-z_][A-Za-z0-9_]*)"')
# flax.nnx's KeyError when a module asks `nnx.Rngs` for a stream it was not given.
_MISSING_NNX_STREAM = re.compile(r"No RngStream named '([A-Za-z_][A-Za-z0-9_]*)' found in Rngs")


def _rng_problem(loaded: LoadedSpec, error: Exception, mode: str) -> Problem | None:
    """The problem of a model that draws on an RNG stream `model.rngs` does not name."""
    match = _MISSING_STREAM.search(str(error))
    if type(error).__name__ != "InvalidRngError":
        match = _MISSING_NNX_STREAM.search(str(error))
    if match is None:
        return None
    stream = match.group(1)
    streams = loaded.spec.model.rngs
    message = (
        f"the model draws on the RNG stream {stream!r} in {mode} mode, but model.rngs "
        f"does not name it ({_first_line(error).split(' (http')[0]})"
    )
    if not streams:
        return loaded.problem(("model",), message, f"add `rngs: [{stream}]` under model")
    names = ", ".join([*streams, stream])
    return loaded.problem(("model", "rngs"), message, f"add it: `rngs: [{names}]`")


def init_problem(loaded: LoadedSpec, model: Any, inputs: list[Any], error: Exception) -> Problem:
    """The problem of a model that cannot be initialised on the batch's inputs."""
    flag = loaded.spec.model.train_flag
    if flag and isinstance(error, TypeError) and f"keyword argument '{flag}'" in str(error):
        return _train_flag_problem(loaded, model, [])
    rngs = _rng_problem(loaded, error, "eval")
    if rngs is not None:
        return rngs
    shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
    return loaded.problem(
        ("model", "input"),
        f"the model cannot be initialised on inputs of shape {shapes}: {_first_line(error)}",
    )


def check_traced(
    loaded: LoadedSpec,
    module: Any,
    model: Any,
    batch: Mapping[str, Any],
    variables: Any,
    state: Any,
    rngs: Mapping[str, Any],
    loop_key: Any,
) -> list[Problem]:
    """Stages 3 to 6 on initialised `variables` and `state` (arrays or their shapes).

    Raises `SpecError` for a problem that stops the trace (the model's return value does
    not match `model.outputs`); returns the others.
    """
    import jax

    spec = loaded.spec
    batch = {key: jax.ShapeDtypeStruct(v.shape, v.dtype) for key, v in batch.items()}
    inputs = wiring.model_inputs(loaded, batch)
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
            _rng_problem(loaded, error, "training")
            or loaded.problem(
                ("model", "input"), f"the model fails in training mode: {_first_line(error)}"
            )
        ]
    result = applied[0] if mutable else applied
    outputs = _named_outputs(loaded, result)
    problems = _check_term_shapes(loaded, outputs, batch) + _check_top_k(loaded, outputs, batch)
    if problems:
        return problems
    problems = _check_terms(loaded, module, outputs, batch, variables["params"])
    if problems:
        return problems
    # A scanning module's train_step is traced over a stack of K batches (2 for auto, whose
    # scan takes any length); its train_one_step like val_step, over one batch.
    requested = spec.train.steps_per_call
    k = 2 if requested == "auto" else int(requested)
    names = ["train_step", "val_step"] + (["train_one_step"] if k > 1 else [])
    for step_name in names:
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


def parallel_counts(loaded: LoadedSpec, processes: int = 1) -> tuple[int, int] | None:
    """`(data, fsdp)` of the spec's `parallel` on the run's devices (None: absent, on one
    process; with several, no `parallel` means `data: auto`).

    Raises `SpecError` for more devices than exist (at `parallel.data`/`parallel.fsdp`), a
    mesh that leaves devices of a multi-process run out, or a batch size that does not
    split over the mesh (at `data.batch_size`).
    """
    from beagle.spec.models import ParallelSpec

    parallel = loaded.spec.parallel
    if parallel is None:
        if processes == 1:
            return None
        parallel = ParallelSpec()
    import jax

    from beagle.spec.semantics import batch_size_problem
    from beagle.training.sharding import resolve_counts

    devices = jax.device_count()
    try:
        data, fsdp = resolve_counts(parallel.data, parallel.fsdp, devices)
        if processes > 1 and data * fsdp != devices:
            raise ValueError(
                f"parallel.data: {processes} processes train on all of their {devices} "
                f"devices, but data {data} x fsdp {fsdp} uses {data * fsdp}; set data: auto "
                "(or data x fsdp to the device count)"
            )
    except ValueError as error:
        where, _, message = str(error).partition(": ")
        key = where.split(".")[-1]
        raise SpecError(
            [
                loaded.problem(
                    ("parallel", key),
                    message.split("; ")[0],
                    message.split("; ")[1] if "; " in message else None,
                )
            ]
        ) from None
    problem = batch_size_problem(loaded.spec.data.batch_size, data * fsdp, loaded.problem)
    if problem is not None:
        raise SpecError([problem])
    return data, fsdp


def share_data(loaded: LoadedSpec, wired: Wired, counts: tuple[int, int]) -> None:
    """Make the data source read only this process's rows of each global batch on the
    `data x fsdp` mesh; `SpecError` when it cannot (a `python` function without
    `process_index`)."""
    from beagle import data
    from beagle.training.sharding import BatchShare, make_mesh

    try:
        wired.data.source.share_with(BatchShare(make_mesh(*counts)))
    except data.DataError as error:
        raise SpecError([loaded.problem(error.field, error.message, error.hint)]) from None


def trace_spec(loaded: LoadedSpec) -> list[Problem]:
    """Trace the spec's generated steps with `jax.eval_shape`; the problems found, if any."""
    try:
        return _trace(loaded)
    except SpecError as error:
        return list(error.problems)


def _trace(loaded: LoadedSpec) -> list[Problem]:
    import jax

    from beagle.compiler import compile_spec
    from beagle.training import TrainState

    spec = loaded.spec
    parallel_counts(loaded)
    text = compile_spec(spec, loaded.source_name)
    module = wiring.import_module_from_text(
        text, f"_beagle_trace_{spec.name}", f"<beagle check: {spec.name}>"
    )
    plan = wiring.plan_data(loaded)
    batch = {key: jax.ShapeDtypeStruct(v.shape, v.dtype) for key, v in plan.sample.items()}
    problems = check_batch_keys(loaded, batch)
    if problems:
        return problems
    model = wiring.build_model(loaded, module)
    problems = check_model_call(loaded, model)
    if problems:
        return problems
    init_key, loop_key = wiring.root_keys(spec.seed)
    inputs = wiring.model_inputs(loaded, batch)
    rngs = wiring.init_rngs(loaded, init_key)
    try:
        variables = jax.eval_shape(
            lambda r, xs: model.init(r, *xs, **wiring.model_kwargs(loaded, train=False)),
            rngs,
            inputs,
        )
    except Exception as error:  # the model cannot run on these inputs
        return [init_problem(loaded, model, inputs, error)]
    wiring.check_collections(loaded, variables)
    state = jax.eval_shape(
        lambda v: TrainState.create(
            apply_fn=model.apply,
            params=v["params"],
            tx=module.make_optimizer(),
            **wiring.state_extras(loaded, v),
        ),
        variables,
    )
    return check_traced(loaded, module, model, batch, variables, state, rngs, loop_key)


@dataclass
class Wired:
    """Everything `train_loop` needs, built from a spec."""

    module: Any
    model: Any
    state: Any
    data: wiring.DataPlan
    rng_key: Any  # the loop's key: step s draws fold_in(rng_key, s)


def wire(loaded: LoadedSpec, module: Any) -> Wired:
    """Build data, model and state for `module` (the imported generated module).

    On the way it makes `trace_spec`'s checks on the real model, batch and state, so a
    spec that `beagle check` rejects raises the same `SpecError` here.
    """
    plan = wiring.plan_data(loaded)
    problems = check_batch_keys(loaded, plan.sample)
    if problems:
        raise SpecError(problems)
    model = wiring.build_model(loaded, module)
    problems = check_model_call(loaded, model)
    if problems:
        raise SpecError(problems)
    init_key, loop_key = wiring.root_keys(loaded.spec.seed)
    try:
        variables = wiring.init_variables(loaded, model, plan.sample, init_key)
    except SpecError:
        raise
    except Exception as error:  # the model cannot run on these inputs
        inputs = wiring.model_inputs(loaded, plan.sample)
        raise SpecError([init_problem(loaded, model, inputs, error)]) from None
    state = wiring.build_state(loaded, model, variables, module)
    rngs = wiring.init_rngs(loaded, init_key)
    problems = check_traced(loaded, module, model, plan.sample, variables, state, rngs, loop_key)
    if problems:
        raise SpecError(problems)
    return Wired(module, model, state, plan, loop_key)
