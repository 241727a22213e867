"""Wiring a spec to real objects: the generated module, the model, the data, the state.

Failures that a user fixes in the spec (an import path that does not resolve, arguments
the model class does not take, data that does not fit the batch size) become `SpecError`
problems at the spec line involved, so `beagle run` exits 2 with the same kind of message
as `beagle check`.

These are the parts; `beagle.runner.trace` puts them together with its checks, as
`trace_spec` (shapes only, for `beagle check`) and `wire` (real arrays, for `beagle run`).
This module imports nothing else from the runner.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from beagle import catalog
from beagle.spec import LoadedSpec, SpecError
from beagle.spec.problems import did_you_mean, plural

__all__ = [
    "DataPlan",
    "build_model",
    "build_state",
    "import_attribute",
    "import_module_from_file",
    "import_module_from_text",
    "init_variables",
    "model_inputs",
    "model_kwargs",
    "module_hash",
    "plan_data",
    "precision_kwargs",
    "state_extras",
]


def module_hash(text: str) -> str:
    """The hash recorded in checkpoints to tell whether the generated module changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ensure_cwd_on_path() -> None:
    """The current folder is on the import path, as with `python -m` (SPEC.md, `model`)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_module_from_file(path: Path, module_name: str) -> ModuleType:
    """Import the module at `path` under `module_name` (replacing one of that name)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always loads
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def import_module_from_text(text: str, module_name: str, filename: str) -> ModuleType:
    """Execute generated source `text` as a module (for tracing: nothing is written)."""
    module = ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    try:
        exec(compile(text, filename, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def import_attribute(loaded: LoadedSpec, path: str, where: tuple[str | int, ...]) -> Any:
    """Import `package.module:Attribute`, or raise a `SpecError` at `where`."""
    ensure_cwd_on_path()
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError(
            [
                loaded.problem(
                    where,
                    f"cannot import module {module_name!r}: {error}",
                    "run beagle from the folder that holds your package",
                )
            ]
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise SpecError(
                [
                    loaded.problem(
                        where,
                        f"module {module_name!r} has no attribute {attribute!r}",
                        did_you_mean(part, names, f"{module_name} defines"),
                    )
                ]
            )
        target = getattr(target, part)
    return target


def build_model(loaded: LoadedSpec, module: Any) -> Any:
    """The model the spec's `model.class` and `model.args` describe: a `flax.linen.Module`,
    or for `model.kind: nnx` an `NnxModel` built by the generated `module`."""
    import flax.linen as nn

    spec = loaded.spec.model
    cls = import_attribute(loaded, spec.class_path, ("model", "class"))
    is_linen = isinstance(cls, type) and issubclass(cls, nn.Module)
    # A class can only be an NNX module if flax.nnx is imported (by its module, or by
    # ours): not importing it for a linen model saves ~0.13 s of every run's start.
    nnx = sys.modules.get("flax.nnx")
    is_nnx = nnx is not None and isinstance(cls, type) and issubclass(cls, nnx.Module)
    if spec.kind == "linen" and is_nnx:
        raise SpecError(
            [
                loaded.problem(
                    ("model", "kind"),
                    f"model.kind is linen (the default) but {spec.class_path} is a flax.nnx.Module",
                    "set model.kind: nnx",
                )
            ]
        )
    if spec.kind == "nnx" and not is_nnx:
        raise SpecError(
            [
                loaded.problem(
                    ("model", "kind"),
                    f"model.kind is nnx but {spec.class_path} is "
                    + ("a flax.linen.Module" if is_linen else "not a flax.nnx.Module"),
                    "set model.kind: linen" if is_linen else None,
                )
            ]
        )
    if not (is_linen or is_nnx):
        raise SpecError(
            [loaded.problem(("model", "class"), f"{spec.class_path} is not a flax.linen.Module")]
        )
    given = dict(spec.args)
    if is_nnx:
        given["rngs"] = None
        sized = catalog.NNX_SIZED_FROM_DATA.get(spec.class_path)
        if sized is not None:
            given.setdefault(sized, None)
    try:
        inspect.signature(cls).bind(**given)
    except TypeError as error:
        hidden = ("parent", "name", "rngs", catalog.NNX_SIZED_FROM_DATA.get(spec.class_path))
        fields = [p for p in inspect.signature(cls).parameters if p not in hidden]
        raise SpecError(
            [
                loaded.problem(
                    ("model", "args"),
                    f"{spec.class_path} does not take these arguments: {error}",
                    "it takes: " + ", ".join(fields) if fields else None,
                )
            ]
        ) from None
    extra = precision_kwargs(loaded, cls)  # checked for both kinds
    if is_nnx:
        from beagle.runner.nnx_model import NnxModel

        return NnxModel(module, cls, model_input_keys(loaded))
    return cls(**spec.args, **extra)


def precision_kwargs(loaded: LoadedSpec, cls: type) -> dict[str, Any]:
    """`dtype=<compute>, param_dtype=float32` with `precision`, else nothing; a class that
    does not take both keywords is a problem at `precision` (as the generated
    `make_model()` passes them)."""
    import jax.numpy as jnp

    precision = loaded.spec.precision
    if precision is None:
        return {}
    parameters = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [k for k in ("dtype", "param_dtype") if k not in parameters and not takes_any]
    if missing:
        raise SpecError(
            [
                loaded.problem(
                    ("precision",),
                    f"precision builds the model with dtype and param_dtype, but "
                    f"{loaded.spec.model.class_path} does not take "
                    f"{' or '.join(missing)}",
                    "give the class `dtype` and `param_dtype` fields and pass them to its "
                    "layers (as beagle.models does), or remove precision",
                )
            ]
        )
    return {"dtype": getattr(jnp, precision.compute), "param_dtype": jnp.float32}


def model_input_keys(loaded: LoadedSpec) -> list[str]:
    """The batch keys `model.input` names, in order: the model's positional inputs."""
    refs = loaded.spec.model.input
    return [ref.removeprefix("batch.") for ref in ([refs] if isinstance(refs, str) else refs)]


def model_inputs(loaded: LoadedSpec, batch: Mapping[str, Any]) -> list[Any]:
    """The positional inputs the model is called with: the batch keys `model.input` names."""
    refs = loaded.spec.model.input
    refs_list = [refs] if isinstance(refs, str) else list(refs)
    inputs = []
    for i, ref in enumerate(refs_list):
        key = ref.removeprefix("batch.")
        if key not in batch:
            where: tuple[str | int, ...] = (
                ("model", "input") if isinstance(refs, str) else ("model", "input", i)
            )
            raise SpecError(
                [
                    loaded.problem(
                        where,
                        f"the batch has no key {key!r}",
                        did_you_mean(key, list(batch), "the data source gives"),
                    )
                ]
            )
        inputs.append(batch[key])
    return inputs


def model_kwargs(loaded: LoadedSpec, *, train: bool) -> dict[str, Any]:
    """The keyword arguments (the train flag) the model is called with."""
    if loaded.spec.model.kind == "nnx":
        return {"train": train}  # NnxModel.apply's mode; the model's own is train()/eval()
    flag = loaded.spec.model.train_flag
    return {flag: train} if flag else {}


def init_rngs(loaded: LoadedSpec, key: Any) -> dict[str, Any]:
    """`params` plus every stream `model.rngs` names, each with its own key (split on the
    host for a host key from `root_keys`: no device program)."""
    import jax
    import numpy as np

    from beagle.training.rng import host_split

    names = ["params", *[n for n in loaded.spec.model.rngs if n != "params"]]
    if isinstance(key, np.ndarray):
        split = host_split(key, len(names))
        return {name: split[i] for i, name in enumerate(names)}
    keys = jax.random.split(key, len(names))
    return {name: keys[i] for i, name in enumerate(names)}


def init_variables(loaded: LoadedSpec, model: Any, batch: Mapping[str, Any], key: Any) -> Any:
    """Initialise the model's variables from one real batch (eval mode, jitted once, with
    less of XLA's optimisation: it runs once, and a CNN's init compiles 4x faster)."""
    import jax

    from beagle.xla import RUN_ONCE_COMPILE

    inputs = model_inputs(loaded, batch)
    rngs = init_rngs(loaded, key)
    kwargs = model_kwargs(loaded, train=False)
    init = jax.jit(lambda r, xs: model.init(r, *xs, **kwargs), compiler_options=RUN_ONCE_COMPILE)
    return init(rngs, inputs)


def check_collections(loaded: LoadedSpec, variables: Mapping[str, Any]) -> None:
    """The model's variable collections agree with `model.batch_norm`."""
    has_stats = "batch_stats" in variables
    if has_stats and not loaded.spec.model.batch_norm:
        raise SpecError(
            [
                loaded.problem(
                    ("model", "batch_norm"),
                    "the model has BatchNorm layers (a `batch_stats` collection) "
                    "but the spec does not declare them",
                    "set model.batch_norm: true",
                )
            ]
        )
    if loaded.spec.model.batch_norm and not has_stats:
        raise SpecError(
            [
                loaded.problem(
                    ("model", "batch_norm"),
                    "model.batch_norm is true but the model has no BatchNorm layers "
                    "(no `batch_stats` collection)",
                    "set model.batch_norm: false, or check model.args",
                )
            ]
        )
    other = sorted(set(variables) - {"params", "batch_stats"})
    if other:
        raise SpecError(
            [
                loaded.problem(
                    ("model", "class"),
                    f"the model creates variable collections beagle does not keep: "
                    f"{', '.join(other)}",
                    "beagle keeps `params` and, with batch_norm, `batch_stats`",
                )
            ]
        )


def build_state(loaded: LoadedSpec, model: Any, variables: Mapping[str, Any], module: Any) -> Any:
    """The `TrainState` with the generated optimizer (and `batch_stats` when declared, the
    dynamic loss scale with float16)."""
    import jax

    from beagle.training import TrainState
    from beagle.xla import RUN_ONCE_COMPILE

    check_collections(loaded, variables)
    # `TrainState.create`, with the optimizer's first state made by one jitted program
    # (eagerly, each distinct parameter shape's zeros compiled a program of its own), or
    # by none for a state without arrays (plain SGD's).
    tx = module.make_optimizer()
    params = variables["params"]
    has_arrays = bool(jax.tree.leaves(jax.eval_shape(tx.init, params)))
    init = jax.jit(tx.init, compiler_options=RUN_ONCE_COMPILE) if has_arrays else tx.init
    return TrainState(
        step=0,
        apply_fn=model.apply,
        params=params,
        tx=tx,
        opt_state=init(params),
        **state_extras(loaded, variables),
    )


def state_extras(loaded: LoadedSpec, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The `TrainState` fields beyond params and optimizer that the spec asks for."""
    from beagle.training import initial_dynamic_scale

    spec = loaded.spec
    extras: dict[str, Any] = {}
    if spec.model.batch_norm:
        extras["batch_stats"] = variables["batch_stats"]
    if spec.precision is not None and spec.precision.compute == "float16":
        extras["dynamic_scale"] = initial_dynamic_scale()
    return extras


@dataclass(frozen=True)
class DataPlan:
    """How many batches an epoch and a validation pass take, and where they come from."""

    source: Any  # a beagle.data.DataSource
    batches_per_epoch: int
    val_batches: int | None  # the whole split (the last batch short), or validation.batches
    validate: bool
    sample: Mapping[str, Any]  # one real training batch


def _problem(
    loaded: LoadedSpec, where: Sequence[str | int], message: str, hint: str | None = None
) -> SpecError:
    return SpecError([loaded.problem(tuple(where), message, hint)])


def build_source(data_spec: Any, seed: int) -> Any:
    """The data source a spec's `data` section names: an array or `python` source
    (`beagle.data`), or an example source on grain (`beagle.examples`)."""
    if catalog.SOURCES[data_spec.source].per_example:
        from beagle import examples

        return examples.from_spec(data_spec, seed)
    from beagle import data

    return data.from_spec(data_spec, seed)


def plan_data(loaded: LoadedSpec) -> DataPlan:
    """Build the data source and settle the batch counts, checking them against the data."""
    from beagle import data

    spec = loaded.spec
    try:
        source = build_source(spec.data, spec.seed)
        sample = source.sample_batch()
    except data.DataError as error:
        raise _problem(loaded, error.field, error.message, error.hint) from None
    k = spec.train.steps_per_call
    available = source.train_batches
    if spec.train.batches_per_epoch is not None:
        per_epoch = spec.train.batches_per_epoch
        if available is not None and per_epoch > available:
            raise _problem(
                loaded,
                ("train", "batches_per_epoch"),
                f"{per_epoch} is more than the {plural(available, 'batch', 'batches')} of "
                f"{spec.data.batch_size} the training data holds",
                f"use at most {available}, or leave it out to use them all",
            )
    elif available is None:
        raise _problem(
            loaded,
            ("train",),
            f"the {spec.data.source} data source cannot tell how many batches an epoch has",
            "set train.batches_per_epoch",
        )
    else:
        per_epoch = available
    if k != 1 and not getattr(source, "drop_remainder", True):
        raise _problem(
            loaded,
            ("data", "drop_remainder"),
            "steps_per_call stacks batches, so they must all have the same shape",
            "set data.drop_remainder: true",
        )
    validate = spec.validation is not None
    val_batches: int | None = None
    if validate:
        assert spec.validation is not None
        if not source.has_val:
            hint = (
                "set data.val_fraction above 0"
                if catalog.SOURCES[spec.data.source].holds_out_val
                else "set data.val"
            )
            raise _problem(
                loaded, ("validation",), "validation is asked for but the data has none", hint
            )
        val_batches = spec.validation.batches
        known = source.val_batches
        if val_batches is None:
            if known is None:
                raise _problem(
                    loaded,
                    ("validation",),
                    f"the {spec.data.source} data source cannot tell how many batches "
                    "a validation pass has",
                    "set validation.batches",
                )
            val_batches = known
        elif known is not None and val_batches > known:
            raise _problem(
                loaded,
                ("validation", "batches"),
                f"{val_batches} is more than the {plural(known, 'batch', 'batches')} "
                "the validation data holds",
                f"use at most {known}",
            )
    return DataPlan(source, per_epoch, val_batches, validate, sample)


def root_keys(seed: int) -> tuple[Any, Any]:
    """(init key, loop key), both pure functions of the spec's seed: `split(PRNGKey(seed))`,
    computed on the host (numpy `uint32[2]` keys, bit for bit jax's) for the default
    threefry keys, so that no device program runs for them (see `training/rng.py`)."""
    import jax
    import numpy as np

    from beagle.training.rng import host_key, host_seed_key, host_split

    root = host_key(host_seed_key(seed))
    if isinstance(root, np.ndarray):
        init_key, loop_key = host_split(root, 2)
        return init_key, loop_key
    init_key, loop_key = jax.random.split(root)
    return init_key, loop_key
