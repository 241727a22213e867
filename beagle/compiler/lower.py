"""Lowering: a validated `Spec` becomes a `ModuleIR`, with every decision made here.

The templates only paste what this module builds, so everything that could put a spec
string into code goes through four doors, each checked again here even though the front
end has validated the spec already (a compiler that trusts its input is one refactoring
away from an injection):

- `_identifier`: an ASCII identifier that is not a keyword (keyword argument names);
- `_import`: `package.module:Attribute`, imported under a local name that cannot shadow
  anything the module uses itself;
- `_reference`: `params`, `batch.<key>` or `outputs.<declared name>`, rendered as a dict
  lookup with the key as a string literal;
- `render_literal`: numbers, booleans, `None`, strings, lists and dicts of them, through
  `repr()`.

A spec that fails one of these checks raises `CompileError`; `beagle.spec` reports the
same problems with file positions before the compiler ever runs.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
import sys
from collections.abc import Mapping

from beagle import catalog
from beagle.compiler.ir import (
    ApplyIR,
    HeaderIR,
    ImportGroupIR,
    LossesIR,
    ModelIR,
    ModuleIR,
    NnxIR,
    OptimizerIR,
    StepIR,
    TermIR,
)
from beagle.spec.models import (
    IDENTIFIER_PATTERN,
    IMPORT_PATH_PATTERN,
    NAME_PATTERN,
    LossSpec,
    MetricSpec,
    ScheduleSpec,
    Spec,
)

__all__ = ["CompileError", "lower", "render_literal"]

# The front end's patterns (`beagle.spec.models`), checked again here: one regex, two doors.
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_MODULE_NAME = re.compile(NAME_PATTERN)
_IMPORT_PATH = re.compile(IMPORT_PATH_PATTERN)
_THIRD_PARTY = frozenset({"jax", "flax", "optax"})
_MAX_LITERAL_DEPTH = 32

# Every name the templates bind or read, at module level or inside a function. An
# imported user name never takes one of these (nor a builtin): it gets an alias instead.
TEMPLATE_NAMES: frozenset[str] = frozenset(
    {
        "Any", "Arrays", "TrainState", "jax", "jnp", "optax",
        "make_model", "make_optimizer", "compute_losses", "compute_metrics",
        "check_same_shape", "train_step", "train_one_step", "val_step", "loss_fn",
        "grad_fn", "state", "new_state", "batch", "batches", "rng_key", "rng_keys",
        "stream_keys", "params", "model_out", "updates", "outputs", "terms", "loss",
        "grads", "batch_stats", "finite", "metrics", "schedule", "optimizer", "term",
        "predictions", "targets", "carry", "xs", "new", "old", "top_k", "output",
        "dynamic_scale", "grads_finite",
        "nnx", "model", "model_graphs", "graph", "train_graph", "eval_graph", "rng_state",
        "rngs",
        *catalog.HELPERS,
    }
)  # fmt: skip
_RESERVED: frozenset[str] = TEMPLATE_NAMES | frozenset(dir(builtins))


class CompileError(ValueError):
    """A spec the compiler refuses to emit: it would put an unchecked string into code."""


def lower(spec: Spec, source_name: str | None = None) -> ModuleIR:
    """Decide everything about the module generated for `spec`.

    `source_name` is the spec's file name without its folder (it only appears in the
    header comment); it defaults to `<name>.yaml`.
    """
    return _Lowering(spec).module(source_name if source_name is not None else f"{spec.name}.yaml")


def render_literal(value: object, _depth: int = 0) -> str:
    """Python source for a YAML value: numbers, booleans, None, strings, lists and dicts."""
    if _depth > _MAX_LITERAL_DEPTH:
        raise CompileError("a literal nested too deeply")
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(float(value))
        return f'float("{value!r}")'  # inf, -inf, nan: repr gives exactly these words
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render_literal(item, _depth + 1) for item in value) + "]"
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise CompileError(f"a dict key must be a string or an integer, got {key!r}")
            items.append(f"{render_literal(key)}: {render_literal(item, _depth + 1)}")
        return "{" + ", ".join(items) + "}"
    raise CompileError(f"cannot write a {type(value).__name__} as a literal")


def _identifier(name: object, what: str) -> str:
    """`name` if it is an ASCII, non-keyword identifier; otherwise CompileError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise CompileError(f"{what} must be an ASCII identifier, got {name!r}")
    return name


def _key(name: str, what: str) -> str:
    """A validated identifier as a string literal (a dict key)."""
    return repr(_identifier(name, what))


def _display_name(source_name: str) -> str:
    """The spec's file name as it may appear in a comment: one printable ASCII line."""
    if source_name.isascii() and source_name.isprintable():
        return source_name
    return ascii(source_name)


def _parenthesize(expr: str) -> str:
    """Wrap a rendered literal that starts with a sign, so operators bind as written."""
    return f"({expr})" if expr.startswith("-") else expr


class _Imports:
    """The module's imports and the local names they bind."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._straight: set[tuple[str, str | None]] = set()  # (module, alias)
        self._from: set[tuple[str, str, str | None]] = set()  # (module, name, alias)
        self._user: dict[str, str] = {}  # import path -> local name

    def module(self, module: str, alias: str | None = None) -> None:
        self._straight.add((module, alias))

    def from_(self, module: str, name: str) -> None:
        self._from.add((module, name, None))

    def user(self, path: object, what: str) -> str:
        """Import `package.module:Attribute[.more]`; return the expression that names it."""
        if not isinstance(path, str) or not _IMPORT_PATH.fullmatch(path):
            raise CompileError(f"{what} must be an import path 'package.module:Attribute'")
        module, _, attribute = path.partition(":")
        parts = [*module.split("."), *attribute.split(".")]
        if any(keyword.iskeyword(part) for part in parts):
            raise CompileError(f"{what} must not contain a Python keyword, got {path!r}")
        if path in self._user:
            return self._user[path]
        first, _, rest = attribute.partition(".")
        local = first
        counter = 1
        while local in _RESERVED or local in self.names:
            local = f"{first}_{counter}"
            counter += 1
        self.names.add(local)
        self._from.add((module, first, None if local == first else local))
        expr = f"{local}.{rest}" if rest else local
        self._user[path] = expr
        return expr

    def groups(self) -> tuple[ImportGroupIR, ...]:
        """Standard library, third party, then everything else; sorted as isort would."""
        buckets: list[list[tuple[str, str | None]]] = [[], [], []]
        from_buckets: list[dict[str, list[tuple[str, str | None]]]] = [{}, {}, {}]
        for module, alias in self._straight:
            buckets[_group_of(module)].append((module, alias))
        for module, name, alias in self._from:
            from_buckets[_group_of(module)].setdefault(module, []).append((name, alias))
        groups = []
        for straight, froms in zip(buckets, from_buckets, strict=True):
            lines = [
                f"import {module}" + (f" as {alias}" if alias else "")
                for module, alias in sorted(straight, key=lambda item: item[0].lower())
            ]
            for module in sorted(froms, key=str.lower):
                names = froms[module]
                plain = sorted((n for n, a in names if a is None), key=_member_sort_key)
                if plain:
                    lines.append(f"from {module} import {', '.join(plain)}")
                for name, alias in sorted(item for item in names if item[1] is not None):
                    lines.append(f"from {module} import {name} as {alias}")
            if lines:
                groups.append(ImportGroupIR(lines=tuple(lines)))
        return tuple(groups)


def _group_of(module: str) -> int:
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names:
        return 0
    return 1 if top in _THIRD_PARTY else 2


def _member_sort_key(name: str) -> tuple[int, str]:
    """isort's order-by-type: CONSTANTS, then Classes, then functions and variables."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


class _Lowering:
    """One spec's lowering; collects imports while it builds the pieces."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.imports = _Imports()
        self.uses: set[str] = {"jax", "optax", "Any"}  # names the templates always use
        self.outputs = self._declared_outputs()
        self.uses_params = False
        self.helpers: set[str] = set()

    def module(self, source_name: str) -> ModuleIR:
        spec = self.spec
        if not _MODULE_NAME.fullmatch(spec.name) or keyword.iskeyword(spec.name):
            raise CompileError(f"name must match [a-z_][a-z0-9_]*, got {spec.name!r}")
        model = self._model()
        optimizer = self._optimizer()
        losses = self._losses()
        metrics = tuple(
            self._term("metric", name, entry, catalog.METRICS)
            for name, entry in spec.metrics.items()
        )
        for name in spec.metrics:
            if name in spec.losses or name in catalog.RESERVED_METRIC_NAMES:
                raise CompileError(f"metric {name!r} collides with a loss term or {name!r}")
        step = self._step(model, losses, has_metrics=bool(metrics))
        self._add_standard_imports()
        return ModuleIR(
            header=HeaderIR(source_name=_display_name(source_name), spec_name=spec.name),
            imports=self.imports.groups(),
            model=model,
            optimizer=optimizer,
            losses=losses,
            metrics=metrics,
            helpers=tuple(name for name in catalog.HELPERS if name in self.helpers),
            step=step,
        )

    # -- model -----------------------------------------------------------------------

    def _declared_outputs(self) -> dict[str, str]:
        """Output name -> how it is read from `model_out` (the model's return value)."""
        outputs = self.spec.model.outputs
        if isinstance(outputs, str):
            names = [(_identifier(outputs, "model.outputs"), "model_out")]
        elif isinstance(outputs, list):
            names = [(_identifier(name, "model.outputs"), "") for name in outputs]
        else:
            names = [
                (_identifier(name, "model.outputs"), f"model_out[{_key(key, 'model.outputs')}]")
                for key, name in outputs.items()
            ]
        declared = dict(names)
        if len(declared) != len(names):
            raise CompileError("model.outputs names an output twice")
        return declared

    def _outputs_expr(self) -> str:
        outputs = self.spec.model.outputs
        if isinstance(outputs, list):
            keys = ", ".join(repr(name) for name in outputs)
            keys += "," if len(outputs) == 1 else ""
            return f"dict(zip(({keys}), model_out, strict=True))"
        return "{" + ", ".join(f"{name!r}: {read}" for name, read in self.outputs.items()) + "}"

    def _model(self) -> ModelIR:
        model = self.spec.model
        class_name = self.imports.user(model.class_path, "model.class")
        kwargs = self._model_keywords()
        inputs = model.input if isinstance(model.input, list) else [model.input]
        input_exprs = tuple(self._batch_reference(ref, "model.input") for ref in inputs)
        streams = [_key(name, "model.rngs entry") for name in model.rngs]
        if len(set(streams)) != len(streams):
            raise CompileError("model.rngs names a stream twice")
        if len(streams) == 1:
            rngs = "{" + f"{streams[0]}: rng_key" + "}"
        else:
            rngs = "{" + ", ".join(f"{s}: stream_keys[{i}]" for i, s in enumerate(streams)) + "}"
        flag = None if model.kind == "nnx" else model.train_flag
        if model.kind == "linen" and flag is None and (model.batch_norm or streams):
            raise CompileError("model.train_flag is required with batch_norm or rngs")

        def apply(train: bool) -> ApplyIR:
            params = "params" if train else "state.params"
            variables = f'{{"params": {params}'
            variables += ', "batch_stats": state.batch_stats}' if model.batch_norm else "}"
            args = [variables, *input_exprs]
            if flag is not None:
                args.append(f"{_identifier(flag, 'model.train_flag')}={train}")
            if streams:
                args.append(f"rngs={rngs}")
            mutable = train and model.batch_norm
            if mutable:
                args.append('mutable=["batch_stats"]')
            targets = "model_out, updates" if mutable else "model_out"
            return ApplyIR(targets=targets, args=tuple(args))

        nnx = None
        if model.kind == "nnx":
            kwargs, nnx = self._nnx(kwargs, input_exprs, streams)
        constructor = f"{class_name}({', '.join(f'{k}={v}' for k, v in kwargs)})"
        return ModelIR(
            class_name=class_name,
            constructor=constructor,
            batch_norm=model.batch_norm,
            stream_split=len(streams) if len(streams) > 1 else 0,
            train_call=apply(train=True),
            eval_call=apply(train=False),
            outputs_expr=self._outputs_expr(),
            float32_outputs=self.spec.precision is not None,
            nnx=nnx,
        )

    def _nnx(
        self, kwargs: tuple[tuple[str, str], ...], inputs: tuple[str, ...], streams: list[str]
    ) -> tuple[tuple[tuple[str, str], ...], NnxIR]:
        """An NNX model's constructor keywords (input size, `rngs`) and how steps use it."""
        model = self.spec.model
        self.imports.from_("flax", "nnx")
        sized = catalog.NNX_SIZED_FROM_DATA.get(model.class_path)
        doc = "Build the model with the spec's arguments"
        if sized is not None and sized not in model.args:
            kwargs += ((sized, f"{inputs[0]}.shape[1:]"),)
            doc += ", sized for the batch's inputs"
        kwargs += (("rngs", "rngs"),)
        names = [_identifier(name, "model.rngs entry") for name in model.rngs]
        abstract = ", ".join(f"{name}=0" for name in ["params", *names])
        if len(names) == 1:
            reseed = f"{names[0]}=rng_key"
        else:
            reseed = ", ".join(f"{name}=stream_keys[{i}]" for i, name in enumerate(names))
        stats = ", state.batch_stats" if model.batch_norm else ""
        return kwargs, NnxIR(
            make_model_doc=doc + ".",
            abstract_rngs=f"nnx.Rngs({abstract})",
            call=f"model({', '.join(inputs)})",
            reseed=reseed,
            state_merge=f"state.params{stats}, rng_state",
            train_merge=f"params{stats}, rng_state",
            batch_stats="nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))",
        )

    def _model_keywords(self) -> tuple[tuple[str, str], ...]:
        """The model constructor's keyword arguments: `model.args`, then with `precision`
        `dtype=<compute>, param_dtype=jnp.float32` (both model kinds build with these)."""
        kwargs = [
            (_identifier(name, "model.args key"), render_literal(value))
            for name, value in self.spec.model.args.items()
        ]
        precision = self.spec.precision
        if precision is not None:
            if {"dtype", "param_dtype"} & set(self.spec.model.args):
                raise CompileError("model.args must not set dtype or param_dtype with precision")
            compute = catalog.COMPUTE_DTYPES.get(precision.compute)
            if compute is None:
                raise CompileError(f"precision.compute: {precision.compute!r} is not a dtype")
            self.uses.add("jnp")
            kwargs += [("dtype", compute), ("param_dtype", "jnp.float32")]
        return tuple(kwargs)

    # -- optimizer -------------------------------------------------------------------

    def _optimizer(self) -> OptimizerIR:
        opt = self.spec.optimizer
        name = _identifier(opt.name, "optimizer.name")
        if name not in catalog.OPTIMIZERS:
            raise CompileError(f"optimizer.name: {name!r} is not one of beagle's optax optimizers")
        described = [f"Return optax's {name}"]  # joined into the one-line docstring
        schedule_expr = None
        if isinstance(opt.learning_rate, ScheduleSpec):
            schedule = _identifier(opt.learning_rate.schedule, "optimizer.learning_rate.schedule")
            if schedule not in catalog.SCHEDULES:
                raise CompileError(f"{schedule!r} is not one of beagle's optax schedules")
            extra = opt.learning_rate.model_extra or {}
            schedule_expr = f"optax.{schedule}({self._keywords(extra, 'schedule argument')})"
            learning_rate = "schedule"
            described.append(f"with a {schedule}")
        else:
            learning_rate = render_literal(opt.learning_rate)
        args = self._keywords(opt.args, "optimizer.args key")
        call = f"optax.{name}(learning_rate={learning_rate}{', ' if args else ''}{args})"
        if opt.clip_grad_norm is not None:
            clip = render_literal(opt.clip_grad_norm)
            call = f"optax.chain(optax.clip_by_global_norm({clip}), {call},)"
            described.append(f"global-norm clipping at {clip}")
        wrapper = None
        if opt.accumulate is not None:
            every = render_literal(opt.accumulate)
            wrapper = (
                f"optax.MultiSteps(optimizer, every_k_schedule={every}).gradient_transformation()"
            )
            described.append(f"gradients accumulated over {every} steps")
        docstring = ", ".join(described) + "."
        return OptimizerIR(
            docstring=docstring,
            schedule_expr=schedule_expr,
            optimizer_expr=call,
            wrapper=wrapper,
        )

    def _keywords(self, values: Mapping[str, object], what: str) -> str:
        return ", ".join(
            f"{_identifier(key, what)}={render_literal(value)}" for key, value in values.items()
        )

    # -- losses and metrics ----------------------------------------------------------

    def _losses(self) -> LossesIR:
        terms = tuple(
            self._term("loss term", name, entry, catalog.LOSSES)
            for name, entry in self.spec.losses.items()
        )
        if not terms:
            raise CompileError("a spec needs at least one loss term")
        for name in self.spec.losses:
            if len(terms) > 1 and name in catalog.RESERVED_METRIC_NAMES:
                raise CompileError(f"loss term {name!r} would hide the metric {name!r}")
        total = ""
        for index, (name, entry) in enumerate(self.spec.losses.items()):
            lookup = f"terms[{name!r}]"
            weight = entry.weight
            sign = "-" if weight < 0 else "+"
            magnitude = abs(weight)
            scaled = lookup if magnitude == 1 else f"{render_literal(magnitude)} * {lookup}"
            if index == 0:
                total = f"-{scaled}" if sign == "-" else scaled
            else:
                total += f" {sign} {scaled}"
        report = len(terms) > 1
        return LossesIR(
            terms=terms,
            total_expr=total,
            report_terms=report,
            unpack_target="terms" if report else "_",
        )

    def _term(
        self,
        kind: str,
        name: str,
        entry: LossSpec | MetricSpec,
        builtins_: Mapping[str, catalog.Builtin],
    ) -> TermIR:
        key = _key(name, f"{kind} name")
        where = f"{kind} {name!r}"
        args = {
            _identifier(arg, f"{where}: argument name"): value for arg, value in entry.args.items()
        }
        if ":" in entry.fn:
            function = self.imports.user(entry.fn, f"{where}: fn")
            rendered = ", ".join(f"{arg}={self._arg(value, where)}" for arg, value in args.items())
            return TermIR(name=name, key=key, expr=f"{function}({rendered})", shape_checks=())
        builtin = builtins_.get(entry.fn)
        if builtin is None:
            raise CompileError(f"{where}: {entry.fn!r} is not a built-in {kind.split()[0]}")
        unknown = sorted(set(args) - set(builtin.params))
        missing = [param for param in builtin.required if param not in args]
        if unknown or missing:
            raise CompileError(f"{where}: unknown arguments {unknown}, missing {missing}")
        values = dict(builtin.defaults)
        for arg, value in args.items():
            literal = catalog.LITERAL_ARGS.get(arg)
            if literal is not None and (
                isinstance(value, bool)
                or not isinstance(value, int if literal.integer else (int, float))
            ):
                raise CompileError(f"{where}: {arg} must be {literal.words} written in the spec")
            values[arg] = _parenthesize(self._arg(value, where))
        self.uses.update(builtin.uses)
        if builtin.helper:
            self.helpers.add(builtin.helper)
        checks: tuple[str, ...] = ()
        if builtin.shape_guard:
            self.helpers.add("check_same_shape")
            label = repr(f"{kind} {name!r}")
            shaped = ", ".join(values[param] for param in builtin.same_shape)
            checks = (f"check_same_shape({label}, {shaped})",)
        return TermIR(name=name, key=key, expr=builtin.expr.format(**values), shape_checks=checks)

    def _arg(self, value: object, where: str) -> str:
        """A loss or metric argument: a reference, or a literal number, bool or list."""
        if isinstance(value, str):
            return self._reference(value, where)
        if isinstance(value, list):
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                raise CompileError(f"{where}: a list argument must hold numbers only")
        elif not isinstance(value, int | float | bool):
            raise CompileError(f"{where}: unsupported argument {value!r}")
        return render_literal(value)

    def _reference(self, ref: str, where: str) -> str:
        if ref == "params":
            self.uses_params = True
            return "params"
        head, dot, tail = ref.partition(".")
        if dot and head == "batch":
            return f"batch[{_key(tail, f'{where}: batch key')}]"
        if dot and head == "outputs":
            if tail not in self.outputs:
                raise CompileError(f"{where}: {ref!r} is not a declared model output")
            return f"outputs[{_key(tail, f'{where}: output name')}]"
        raise CompileError(f"{where}: {ref!r} is not params, batch.<key> or outputs.<name>")

    def _batch_reference(self, ref: str, where: str) -> str:
        head, dot, tail = ref.partition(".")
        if not (dot and head == "batch"):
            raise CompileError(f"{where}: {ref!r} is not batch.<key>")
        return f"batch[{_key(tail, f'{where}: batch key')}]"

    # -- steps -----------------------------------------------------------------------

    def _step(self, model: ModelIR, losses: LossesIR, *, has_metrics: bool) -> StepIR:
        train = self.spec.train
        aux = []  # (target name, value returned by loss_fn, type)
        if losses.report_terms:
            aux.append(("terms", "terms", "Arrays"))
        if has_metrics:
            aux.append(("outputs", "outputs", "Arrays"))
        if model.batch_norm:
            stats = model.nnx.batch_stats if model.nnx else 'updates["batch_stats"]'
            aux.append(("batch_stats", stats, "Any"))
        if len(aux) == 1:
            aux_targets, aux_values, aux_type = aux[0]
        else:
            aux_targets = "(" + ", ".join(target for target, _, _ in aux) + ")"
            aux_values = "(" + ", ".join(value for _, value, _ in aux) + ")"
            aux_type = "tuple[" + ", ".join(kind for _, _, kind in aux) + "]"
        params = ("params, ", "state.params, ") if self.uses_params else ("", "")
        train_args, val_args = (f"{prefix}outputs, batch" for prefix in params)
        # Metrics are computed after value_and_grad and before the update, in both steps
        # from `state.params`: the parameters the model ran with.
        metrics = ['"loss": loss']
        if losses.report_terms:
            metrics.append("**terms")
        if has_metrics:
            metrics.append(f"**compute_metrics({val_args})")
        loss_scale = self._loss_scaled()
        if train.nan == "skip" or loss_scale:
            self.uses.add("jnp")
        signature = "outputs: Arrays, batch: Arrays"
        k = train.steps_per_call
        scan = isinstance(k, str) or k > 1  # str: auto
        update = "grads=grads, batch_stats=batch_stats" if model.batch_norm else "grads=grads"
        return StepIR(
            signature=f"params: Any, {signature}" if self.uses_params else signature,
            train_args=train_args,
            val_args=val_args,
            has_metrics=has_metrics,
            has_aux=bool(aux),
            aux_targets=aux_targets if aux else "",
            aux_values=aux_values if aux else "",
            aux_type=aux_type if aux else "",
            metrics_expr="{" + ", ".join(metrics) + "}",
            update_call=f"state.apply_gradients({update})",
            # With float16 a non-finite gradient is an overflow: the loss scale handles it.
            nan_skip=train.nan == "skip" and not loss_scale,
            loss_scale=loss_scale,
            scan=scan,
            scan_length=k if isinstance(k, int) else None,
            scan_docstring=(
                f"Take {k} steps, one per stacked batch and key, fused with `jax.lax.scan`."
                if isinstance(k, int)
                else "Take a step per stacked batch and key (any number), fused with "
                "`jax.lax.scan`."
            ),
        )

    def _loss_scaled(self) -> bool:
        return self.spec.precision is not None and self.spec.precision.compute == "float16"

    def _add_standard_imports(self) -> None:
        self.imports.from_("typing", "Any")
        self.imports.module("jax")
        self.imports.module("optax")
        if "jnp" in self.uses:
            self.imports.module("jax.numpy", "jnp")
        if self.spec.model.batch_norm or self._loss_scaled():
            # Only beagle's TrainState has `batch_stats` and `dynamic_scale`; without either
            # flax's suffices.
            self.imports.from_("beagle.training", "TrainState")
        else:
            self.imports.from_("flax.training.train_state", "TrainState")
