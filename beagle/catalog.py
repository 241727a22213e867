"""beagle's own catalogue of built-in names: losses, metrics, optax optimizers and
schedules, and data sources.

This module imports nothing heavy: `beagle gen` validates names against these tables
without importing optax. `tests/test_catalog.py` checks the tables against the installed
optax, so a rename upstream fails loudly.

It is the one home of every fact about a built-in: the compiler, the front end's checks,
`beagle check`'s trace, the runner's choice of best value and the data sources all read
these entries rather than keeping lists of their own.

Each built-in loss and metric also says how the compiler emits it: `expr` is a Python
expression with one `{param}` placeholder per argument, filled in by
`beagle.compiler.lower` with already-rendered argument expressions (`outputs["logits"]`,
`batch["label"]`, `params` or a literal). Where optax has the function, the expression
calls optax's; every expression reduces to a scalar mean over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    """A built-in loss or metric: its argument names and how the compiler emits it."""

    name: str
    params: tuple[str, ...]  # every argument name, in call order
    required: tuple[str, ...]  # the arguments a spec must give
    expr: str = ""  # Python expression with a `{param}` placeholder per argument
    defaults: tuple[tuple[str, str], ...] = ()  # rendered value of an optional argument
    uses: tuple[str, ...] = ()  # module-level names the expression needs (`jnp`, `optax`)
    helper: str | None = None  # a function the generated module defines for it (see below)
    # Arguments whose shapes must match: optax broadcasts them silently otherwise (a
    # (batch, 1) output against (batch,) targets becomes a (batch, batch) loss).
    # `beagle check` and `beagle run` check it before tracing the steps.
    same_shape: tuple[str, ...] = ()
    # The generated module checks `same_shape` itself, with the `check_same_shape` helper,
    # whose message speaks of predictions and targets: only built-ins with those arguments.
    shape_guard: bool = False
    # (scores, labels): `labels` are integer class indices of the shape of `scores`
    # without its last (class) axis.
    integer_labels: tuple[str, str] | tuple[()] = ()
    maximise: bool = False  # a metric whose larger values are better (the best checkpoint)


@dataclass(frozen=True)
class LiteralArg:
    """A built-in's argument that takes a number written in the spec, not a reference."""

    integer: bool  # a positive integer (a static value, such as top-k's k); else a positive number

    @property
    def words(self) -> str:
        return "a positive integer" if self.integer else "a positive number"


# Built-in arguments that take literals, by name (every other built-in argument is a reference).
LITERAL_ARGS: dict[str, LiteralArg] = {
    "delta": LiteralArg(integer=False),
    "k": LiteralArg(integer=True),
}

_SQUARED_ERROR = "optax.squared_error({predictions}, {targets}).mean()"
_ABSOLUTE_ERROR = "jnp.abs({predictions} - {targets}).mean()"  # optax has no absolute error
_ACCURACY = "jnp.mean(jnp.argmax({logits}, axis=-1) == {labels})"

# Built-ins that optax lacks and that would not read well inline are small functions the
# generated module defines when it uses them: the macro of the same name in
# `templates/macros.jinja`. So is `check_same_shape`, which guards `same_shape` arguments.
HELPERS: tuple[str, ...] = ("check_same_shape", "gaussian_kl", "top_k_accuracy")

LOSSES: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "mse",
            ("predictions", "targets"),
            ("predictions", "targets"),
            expr=_SQUARED_ERROR,
            uses=("optax",),
            same_shape=("predictions", "targets"),
            shape_guard=True,
        ),
        Builtin(
            "mae",
            ("predictions", "targets"),
            ("predictions", "targets"),
            expr=_ABSOLUTE_ERROR,
            uses=("jnp",),
            same_shape=("predictions", "targets"),
            shape_guard=True,
        ),
        Builtin(
            "huber",
            ("predictions", "targets", "delta"),
            ("predictions", "targets"),
            expr="optax.huber_loss({predictions}, {targets}, delta={delta}).mean()",
            defaults=(("delta", "1.0"),),
            uses=("optax",),
            same_shape=("predictions", "targets"),
            shape_guard=True,
        ),
        Builtin(
            "softmax_cross_entropy",
            ("logits", "labels"),
            ("logits", "labels"),
            expr="optax.softmax_cross_entropy_with_integer_labels({logits}, {labels}).mean()",
            uses=("optax",),
            integer_labels=("logits", "labels"),
        ),
        Builtin(
            "softmax_cross_entropy_onehot",
            ("logits", "labels"),
            ("logits", "labels"),
            expr="optax.softmax_cross_entropy({logits}, {labels}).mean()",
            uses=("optax",),
            same_shape=("logits", "labels"),
        ),
        Builtin(
            "sigmoid_binary_cross_entropy",
            ("logits", "labels"),
            ("logits", "labels"),
            expr="optax.sigmoid_binary_cross_entropy({logits}, {labels}).mean()",
            uses=("optax",),
            same_shape=("logits", "labels"),
        ),
        Builtin(
            "gaussian_kl",
            ("mean", "logvar"),
            ("mean", "logvar"),
            expr="gaussian_kl({mean}, {logvar})",
            uses=("jnp",),
            helper="gaussian_kl",
            same_shape=("mean", "logvar"),
        ),
        Builtin(
            "l2",
            ("tree",),
            ("tree",),
            expr="0.5 * optax.tree.norm({tree}, squared=True)",
            uses=("optax",),
        ),
    )
}

METRICS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "accuracy",
            ("logits", "labels"),
            ("logits", "labels"),
            expr=_ACCURACY,
            uses=("jnp",),
            integer_labels=("logits", "labels"),
            maximise=True,
        ),
        Builtin(
            "top_k_accuracy",
            ("logits", "labels", "k"),
            ("logits", "labels", "k"),
            expr="top_k_accuracy({logits}, {labels}, k={k})",
            uses=("jax", "jnp"),
            helper="top_k_accuracy",
            integer_labels=("logits", "labels"),
            maximise=True,
        ),
        Builtin(
            "mse",
            ("predictions", "targets"),
            ("predictions", "targets"),
            expr=_SQUARED_ERROR,
            uses=("optax",),
            same_shape=("predictions", "targets"),
            shape_guard=True,
        ),
        Builtin(
            "mae",
            ("predictions", "targets"),
            ("predictions", "targets"),
            expr=_ABSOLUTE_ERROR,
            uses=("jnp",),
            same_shape=("predictions", "targets"),
            shape_guard=True,
        ),
    )
}

# optax functions that take `learning_rate` and return a GradientTransformation.
# The compiler emits `optax.<name>(learning_rate=..., **args)`.
OPTIMIZERS: frozenset[str] = frozenset(
    {
        "adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw",
        "adamw", "adan", "amsgrad", "fromage", "lamb", "lars", "lion", "nadam", "nadamw",
        "noisy_sgd", "novograd", "optimistic_adam", "optimistic_adam_v2",
        "optimistic_gradient_descent", "radam", "rmsprop", "rprop", "sgd", "sign_sgd",
        "signum", "sm3", "yogi",
    }
)  # fmt: skip

# optax schedule functions whose arguments are plain values, never other schedules: numbers
# for most; piecewise_* also take a mapping or a string, sgdr_schedule a list of mappings.
# The compiler emits `optax.<name>(**args)` as the optimizer's `learning_rate`.
SCHEDULES: frozenset[str] = frozenset(
    {
        "constant_schedule", "cosine_decay_schedule", "cosine_onecycle_schedule",
        "exponential_decay", "linear_onecycle_schedule", "linear_schedule",
        "piecewise_constant_schedule", "piecewise_interpolate_schedule",
        "polynomial_schedule", "sgdr_schedule", "warmup_constant_schedule",
        "warmup_cosine_decay_schedule", "warmup_exponential_decay_schedule",
    }
)  # fmt: skip

# Names the generated module uses itself; spec names never become Python names there.
# Built-in NNX models (`beagle.nnx_models`) take one example's input shape through this
# keyword; the generated `make_model` passes the shape of the model's first input.
NNX_SIZED_FROM_DATA: dict[str, str] = {
    "beagle.nnx_models:MLP": "input_shape",
    "beagle.nnx_models:CNN": "input_shape",
}

RESERVED_METRIC_NAMES: frozenset[str] = frozenset({"loss", "skipped_steps", "loss_scale_skips"})

# `precision.compute` -> the dtype expression the generated module passes as `dtype`.
COMPUTE_DTYPES: dict[str, str] = {
    "float32": "jnp.float32",
    "bfloat16": "jnp.bfloat16",
    "float16": "jnp.float16",
}


@dataclass(frozen=True)
class Source:
    """A built-in data source: what its batches hold."""

    name: str  # the spec's `data.source`
    batch_keys: tuple[str, ...] | None  # the keys of every batch; None: the user's data says
    # Validation examples are held out of the training data (`data.val_fraction`); else they
    # come from the user's own validation data (`data.val`).
    holds_out_val: bool = False
    # Read one example at a time on grain (`beagle.examples`), not sliced from arrays.
    per_example: bool = False


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        # image float32 (N, 8, 8, 1), label int32
        Source("digits", ("image", "label"), holds_out_val=True),
        # x float32 (N, features), y targets or labels
        Source("synthetic", ("x", "y"), holds_out_val=True),
        Source("npz", None),  # the arrays of the user's .npz files
        Source("python", None),  # whatever the user's functions yield
        # image float32 (N, H, W, channels) in [0, 1], label int32 (the class folder's index)
        Source("images", ("image", "label"), per_example=True),
        Source("grain", None, per_example=True),  # whatever the user's dataset's examples hold
    )
}
