"""Pydantic models of the spec: the shape of a valid file, nothing more.

Every model forbids unknown keys and is strict (a string is never a number). The checks
that relate one field to another (references to declared outputs, names that collide,
`train_flag` required by `batch_norm`) live in `beagle.spec.semantics`, so that each
problem can point at the one field to change.
"""

from __future__ import annotations

import keyword
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME_PATTERN = r"^[a-z_][a-z0-9_]*$"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
IMPORT_PATH_PATTERN = rf"^{_DOTTED}:{_DOTTED}$"
REFERENCE_PATTERN = r"^(?:params|batch\.[A-Za-z_][A-Za-z0-9_]*|outputs\.[A-Za-z_][A-Za-z0-9_]*)$"
BATCH_REFERENCE_PATTERN = r"^batch\.[A-Za-z_][A-Za-z0-9_]*$"


def _not_keyword(value: str) -> str:
    parts = value.replace(":", ".").split(".")
    bad = [part for part in parts if keyword.iskeyword(part)]
    if bad:
        raise ValueError(f"{bad[0]!r} is a Python keyword")
    return value


def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # pydantic's Literal[1] takes `true` (True == 1)
        raise ValueError("expected 1, got a boolean")
    return value


Identifier = Annotated[
    str,
    StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=64),
    AfterValidator(_not_keyword),
]
"""An ASCII Python identifier of at most 64 characters that is not a keyword."""

ModuleName = Annotated[
    str, StringConstraints(pattern=NAME_PATTERN, max_length=64), AfterValidator(_not_keyword)
]
"""The spec's `name`: lower-case, becomes `generated/<name>.py`."""

ImportPath = Annotated[
    str,
    StringConstraints(pattern=IMPORT_PATH_PATTERN, max_length=256),
    AfterValidator(_not_keyword),
]
"""`package.module:Attribute` (ASCII identifiers only)."""

Reference = Annotated[str, StringConstraints(pattern=REFERENCE_PATTERN, max_length=80)]
"""`params`, `batch.<key>` or `outputs.<name>`."""

BatchReference = Annotated[str, StringConstraints(pattern=BATCH_REFERENCE_PATTERN, max_length=80)]

Number = int | float
Literal_ = Number | bool | list[Number]
"""A literal argument value: a number, a boolean or a list of numbers."""

ArgValue = Annotated[Literal_ | Reference, Field(union_mode="left_to_right")]
"""A loss or metric argument: a literal, or a reference string."""

OptaxArgValue = Number | bool | None | list[Number]
"""Keyword arguments of optax functions: numbers, booleans, null, lists of numbers."""

Mode = Literal["min", "max"]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class ModelSpec(_Section):
    """The Flax model: its class, arguments, inputs, outputs, BatchNorm and RNG streams."""

    kind: Literal["linen", "nnx"] = Field(
        default="linen",
        description="The Flax API the class is written in: 'linen' (a flax.linen.Module) or "
        "'nnx' (a flax.nnx.Module, built with rngs=nnx.Rngs(...) from the seed; its mode "
        "is its own train()/eval(), so train_flag does not apply).",
    )
    class_path: ImportPath = Field(
        alias="class",
        description="Import path 'package.module:Attribute' of a flax.linen.Module subclass "
        "(a flax.nnx.Module with kind: nnx); the built-ins are beagle.models:MLP and "
        "beagle.models:CNN (beagle.nnx_models:MLP and beagle.nnx_models:CNN for nnx).",
    )
    args: dict[Identifier, object] = Field(
        default_factory=dict, description="Keyword arguments for the class."
    )
    input: BatchReference | Annotated[list[BatchReference], Field(min_length=1)] = Field(
        default="batch.x",
        description="A 'batch.<key>' reference, or a list of them for a model that takes "
        "several inputs: what the model is called with.",
    )
    batch_norm: bool = Field(
        default=False,
        description="The model has BatchNorm: the state carries batch_stats, training "
        "updates them, validation uses the running averages.",
    )
    train_flag: Identifier | None = Field(
        default="train",
        description="The keyword through which the model learns whether it is training "
        "(null when it takes none); required with batch_norm or rngs. Linen only: an nnx "
        "model must not set it.",
    )
    rngs: list[Identifier] = Field(
        default_factory=list,
        description="Names of the RNG streams the model draws on in training (dropout, a "
        "VAE's sample), each derived per step; never 'params', each named once.",
    )
    outputs: (
        Identifier
        | Annotated[list[Identifier], Field(min_length=1)]
        | Annotated[dict[Identifier, Identifier], Field(min_length=1)]
    ) = Field(
        default="outputs",
        description="Names of what the model returns: a name (one array), a list of "
        "distinct names (a tuple of that length), or {key: name} (a dict).",
    )


_VAL_FRACTION = "The share of the examples held out for validation, split by seed."
_TEST_FRACTION = (
    "The share of the examples held out as test data (for beagle eval), split by seed, "
    "disjoint from validation; val_fraction + test_fraction must stay below 1."
)


class _DataBase(_Section):
    batch_size: int = Field(ge=1, description="Examples per batch.")
    shuffle: bool = Field(default=True, description="Shuffle the training examples each epoch.")
    drop_remainder: bool = Field(
        default=True,
        description="Training only: an epoch has examples // batch_size batches, all the "
        "same shape; with false the last batch is smaller and costs one more compilation. "
        "Validation always covers every example.",
    )


class DigitsData(_DataBase):
    """scikit-learn's bundled 8x8 handwritten digits: batch keys image and label."""

    source: Literal["digits"] = Field(description="The data source.")
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description=_VAL_FRACTION)
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description=_TEST_FRACTION)


class SyntheticData(_DataBase):
    """Synthetic regression or classification data, deterministic from seed: keys x, y."""

    source: Literal["synthetic"] = Field(description="The data source.")
    task: Literal["regression", "classification"] = Field(
        description="regression: float targets y of shape N x 1; classification: integer labels y."
    )
    examples: int = Field(default=1024, ge=1, description="How many examples to make.")
    features: int = Field(default=8, ge=1, description="Width of each example x.")
    classes: int = Field(default=2, ge=2, description="Number of classes (classification).")
    noise: float = Field(default=0.1, ge=0.0, description="Standard deviation of the noise.")
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description=_VAL_FRACTION)
    test_fraction: float = Field(default=0.0, ge=0.0, lt=1.0, description=_TEST_FRACTION)


class NpzData(_DataBase):
    """Arrays from .npz files: one array per batch key, the same first dimension."""

    source: Literal["npz"] = Field(description="The data source.")
    train: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="Path of the training .npz file, relative to the current directory."
    )
    val: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None, description="Path of the validation .npz file (optional)."
    )
    test: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="Path of the test .npz file (optional; for beagle eval), with the "
        "training file's keys.",
    )


class PythonData(_DataBase):
    """Batches from functions of your own; train.batches_per_epoch is then required."""

    source: Literal["python"] = Field(description="The data source.")
    train: ImportPath = Field(
        description="'package.module:function' taking the batch size and returning a fresh "
        "iterator of batch dicts."
    )
    val: ImportPath | None = Field(
        default=None,
        description="The same for validation batches (optional; with validation, "
        "validation.batches is then required).",
    )
    test: ImportPath | None = Field(
        default=None,
        description="The same for test batches (optional; for beagle eval).",
    )


_PATH = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class _ExampleData(_DataBase):
    """What both example sources (read per example, on grain) take."""

    transform: ImportPath | None = Field(
        default=None,
        description="'package.module:function' fn(example, rng) -> example applied to each "
        "training example (numpy arrays); rng is a numpy Generator seeded from seed, epoch "
        "and the example's index. Outputs keep the same keys, dtypes and shapes.",
    )
    val_transform: ImportPath | None = Field(
        default=None,
        description="'package.module:function' fn(example) -> example applied to each "
        "validation example (no rng); validation is otherwise not transformed.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Worker processes that read and transform batches; 0 reads them in the "
        "training process, with no threads.",
    )
    prefetch: int = Field(
        default=2, ge=1, description="Batches each worker may read ahead of training."
    )


class ImagesData(_ExampleData):
    """A folder of PNG or JPEG images, one subfolder per class: batch keys image and label."""

    source: Literal["images"] = Field(description="The data source.")
    train: _PATH = Field(
        description="Folder of training images: one subfolder per class (the sorted names "
        "are the labels, saved as classes.json in the run folder)."
    )
    val: _PATH | None = Field(
        default=None, description="Folder of validation images, laid out like train."
    )
    test: _PATH | None = Field(
        default=None, description="Folder of test images, laid out like train."
    )
    val_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Without val: the share of each class's images held out for validation, "
        "chosen by seed.",
    )
    image_size: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)] = (
        Field(description="[height, width] every image is resized to (bilinear).")
    )
    channels: Literal[1, 3] = Field(
        default=3, description="3: images are converted to RGB; 1: to grayscale."
    )


class GrainData(_ExampleData):
    """Random-access datasets of your own (a grain.MapDataset or len/getitem)."""

    source: Literal["grain"] = Field(description="The data source.")
    train: ImportPath = Field(
        description="'package.module:function' returning an unbatched, unshuffled "
        "random-access dataset of example dicts; it is given those of seed, process_index "
        "and process_count it takes."
    )
    val: ImportPath | None = Field(
        default=None, description="The same for validation examples (optional)."
    )
    test: ImportPath | None = Field(
        default=None, description="The same for test examples (optional)."
    )


DataSpec = Annotated[
    DigitsData | SyntheticData | NpzData | PythonData | ImagesData | GrainData,
    Field(discriminator="source"),
]


class ScheduleSpec(BaseModel):
    """`{schedule: <optax schedule name>, <its keyword args>}`."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)
    schedule: Identifier = Field(
        description="The name of an optax schedule; the other keys are its keyword "
        "arguments, finite numbers."
    )
    # Extra keys are the schedule's keyword arguments; `beagle.spec.semantics` checks
    # that each is an identifier with an OptaxArgValue.


class OptimizerSpec(_Section):
    """The optax optimizer, its learning rate and what wraps it."""

    name: Identifier = Field(
        description="The name of an optax function returning a GradientTransformation "
        "(adam, adamw, sgd, lamb, ...)."
    )
    learning_rate: Annotated[Number, Field(gt=0)] | ScheduleSpec = Field(
        description="A number above 0, or a schedule: {schedule: <optax schedule name>, "
        "<its keyword arguments>}."
    )
    args: dict[Identifier, OptaxArgValue] = Field(
        default_factory=dict,
        description="Further keyword arguments of that optax function (not learning_rate).",
    )
    clip_grad_norm: Annotated[Number, Field(gt=0)] | None = Field(
        default=None,
        description="Chains optax.clip_by_global_norm with this maximum norm before the optimizer.",
    )
    accumulate: int | None = Field(
        default=None,
        ge=1,
        description="Gradient accumulation over that many steps (optax.MultiSteps).",
    )


_FN = (
    "A built-in name, or 'package.module:function' for a function of your own that returns "
    "a scalar."
)
_ARGS = (
    "Keyword -> value: a reference ('outputs.<name>', 'batch.<key>' or 'params'), or a "
    "literal number, boolean or list of numbers."
)


class LossSpec(_Section):
    """A loss term; the weighted sum of the terms is the metric `loss`."""

    fn: Identifier | ImportPath = Field(description=_FN)
    args: dict[Identifier, ArgValue] = Field(default_factory=dict, description=_ARGS)
    weight: Number = Field(
        default=1.0, description="The term's weight in the sum (negative subtracts)."
    )


class MetricSpec(_Section):
    """A metric, reported under its name in the history."""

    fn: Identifier | ImportPath = Field(description=_FN)
    args: dict[Identifier, ArgValue] = Field(default_factory=dict, description=_ARGS)


class TrainSpec(_Section):
    """How long to train, and how each step runs."""

    epochs: int = Field(ge=1, description="How many epochs to train.")
    batches_per_epoch: int | None = Field(
        default=None,
        ge=1,
        description="Batches per epoch (default: training examples // batch_size); "
        "required with data source python.",
    )
    steps_per_call: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="How many steps one jitted call runs, fused with jax.lax.scan (an "
        "epoch's leftover steps run one at a time), or auto: time 1 against 8 and 32 on the "
        "run's first steps and keep the fastest.",
    )
    nan: Literal["stop", "skip"] = Field(
        default="stop",
        description="On a non-finite loss or gradient: stop the run, or skip the step and "
        "count it in skipped_steps.",
    )


_METRIC = "A history key such as val_loss or train_accuracy."
_MODE = "min: lower is better; max: higher is better."


class EarlyStoppingSpec(_Section):
    """Stop when a history key has not improved for `patience` epochs."""

    metric: Identifier = Field(description=_METRIC)
    mode: Mode = Field(description=_MODE)
    patience: int = Field(ge=1, description="Epochs without improvement before stopping.")
    min_delta: Number = Field(
        default=0.0, ge=0, description="The smallest change that counts as an improvement."
    )


class ValidationSpec(_Section):
    """Validation during training; absent: no validation."""

    every: int = Field(default=1, ge=1, description="Validate every this many epochs.")
    batches: int | None = Field(
        default=None,
        ge=1,
        description="Caps each validation at this many batches (default: every "
        "validation example, the last batch at its own size); required with data source "
        "python.",
    )


class BestSpec(_Section):
    """Also keep the checkpoint with the best value of a history key."""

    metric: Identifier = Field(description=_METRIC)
    mode: Mode = Field(description=_MODE)


class CheckpointSpec(_Section):
    """orbax checkpoints; absent: no checkpoints, and nothing to resume."""

    dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None, description="Where checkpoints go (default <log.dir>/checkpoints)."
    )
    every: int = Field(default=1, ge=1, description="Save every this many epochs.")
    keep: int = Field(default=3, ge=1, description="How many recent checkpoints to keep.")
    best: BestSpec | None = Field(
        default=None, description="Keep the best checkpoint by a history key (optional)."
    )


VARIABLE_PATH_PATTERN = r"^(?:params|batch_stats)(?:/[A-Za-z0-9_]+)*$"
"""A path into the model's variables: `params/dense_1` or `params/dense_1/kernel`."""


class InitSpec(_Section):
    """Start a new run from another run's params and BatchNorm statistics (fine-tuning)."""

    from_: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        alias="from",
        description="A run folder, a checkpoint directory or a checkpoint to take the "
        "params and BatchNorm statistics from; the optimizer starts fresh.",
    )
    checkpoint: Literal["best", "latest"] | Annotated[int, Field(ge=0)] = Field(
        default="best",
        description="Which checkpoint of a run folder or checkpoint directory: best, latest "
        "or a step.",
    )
    exclude: list[Annotated[str, StringConstraints(pattern=VARIABLE_PATH_PATTERN)]] = Field(
        default_factory=list,
        description="Variable paths (params/<layer>[/<name>]) that keep the new model's "
        "own initialisation, e.g. a new head.",
    )


class ParallelSpec(_Section):
    """Data and FSDP parallelism over a `data x fsdp` device mesh (docs/scale-out.md)."""

    data: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default="auto",
        description="Devices along the data axis: auto (every device / fsdp) or a count.",
    )
    fsdp: int = Field(
        default=1,
        ge=1,
        description="Devices along the fsdp axis; params of >= 2**14 elements and their "
        "optimizer state are split over it.",
    )


class PrecisionSpec(_Section):
    """Mixed precision: the dtype the model computes in; params stay float32."""

    compute: Literal["float32", "bfloat16", "float16"] = Field(
        description="The model is built with dtype=<compute> and param_dtype=float32 (its "
        "class must take both); losses and metrics are computed in float32; float16 adds "
        "dynamic loss scaling, its overflow skips counted in loss_scale_skips."
    )


class LogSpec(_Section):
    """The run folder: history, CSV, curves, TensorBoard."""

    dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None, description="The run folder (default runs/<name>)."
    )
    plot: bool = Field(default=True, description="Write a PNG of the curves.")
    tensorboard: bool = Field(default=False, description="Write TensorBoard event files.")


class Spec(_Section):
    """A whole spec file, version 1."""

    version: Annotated[Literal[1], BeforeValidator(_not_bool)] = Field(
        description="The spec language version: 1."
    )
    name: ModuleName = Field(
        description="Lower-case name, not a Python keyword: the generated module is "
        "generated/<name>.py."
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="Seeds parameter init, data shuffling and the per-step RNG keys.",
    )
    model: ModelSpec = Field(description="The model.")
    data: DataSpec = Field(
        description="The data source (digits, synthetic, npz, python, images or grain) "
        "and batching."
    )
    optimizer: OptimizerSpec = Field(description="The optimizer.")
    losses: dict[Identifier, LossSpec] = Field(
        min_length=1,
        description="Name -> loss term, one or more, in order; the weighted sum is "
        "reported as loss.",
    )
    metrics: dict[Identifier, MetricSpec] = Field(
        default_factory=dict,
        description="Name -> metric; names distinct from the losses', from loss, "
        "skipped_steps and loss_scale_skips.",
    )
    train: TrainSpec = Field(description="Epochs and steps.")
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="Stop early on a history key (optional)."
    )
    validation: ValidationSpec | None = Field(
        default=None, description="Validation during training; absent: none."
    )
    checkpoint: CheckpointSpec | None = Field(
        default=None, description="Checkpoints; absent: none, and nothing to resume."
    )
    parallel: ParallelSpec | None = Field(
        default=None, description="Data and FSDP parallelism; absent: one device."
    )
    precision: PrecisionSpec | None = Field(
        default=None,
        description="Mixed precision (optional); absent: the model is built without dtype "
        "arguments and computes as its class says (float32 for the built-ins).",
    )
    init: InitSpec | None = Field(
        default=None,
        description="Start from another run's params and BatchNorm statistics, with a fresh "
        "optimizer (ignored when this run resumes its own checkpoint).",
    )
    log: LogSpec | None = Field(default=None, description="The run folder and its files.")
