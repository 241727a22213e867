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
    class_path: ImportPath = Field(alias="class")
    args: dict[Identifier, object] = Field(default_factory=dict)
    input: BatchReference | Annotated[list[BatchReference], Field(min_length=1)] = "batch.x"
    batch_norm: bool = False
    train_flag: Identifier | None = "train"
    rngs: list[Identifier] = Field(default_factory=list)
    outputs: (
        Identifier
        | Annotated[list[Identifier], Field(min_length=1)]
        | Annotated[dict[Identifier, Identifier], Field(min_length=1)]
    ) = "outputs"


class _DataBase(_Section):
    batch_size: int = Field(ge=1)
    shuffle: bool = True
    drop_remainder: bool = True


class DigitsData(_DataBase):
    source: Literal["digits"]
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)


class SyntheticData(_DataBase):
    source: Literal["synthetic"]
    task: Literal["regression", "classification"]
    examples: int = Field(default=1024, ge=1)
    features: int = Field(default=8, ge=1)
    classes: int = Field(default=2, ge=2)
    noise: float = Field(default=0.1, ge=0.0)
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)


class NpzData(_DataBase):
    source: Literal["npz"]
    train: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    val: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None


class PythonData(_DataBase):
    source: Literal["python"]
    train: ImportPath
    val: ImportPath | None = None


DataSpec = Annotated[
    DigitsData | SyntheticData | NpzData | PythonData, Field(discriminator="source")
]


class ScheduleSpec(BaseModel):
    """`{schedule: <optax schedule name>, <its keyword args>}`."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)
    schedule: Identifier
    # Extra keys are the schedule's keyword arguments; `beagle.spec.semantics` checks
    # that each is an identifier with an OptaxArgValue.


class OptimizerSpec(_Section):
    name: Identifier
    learning_rate: Annotated[Number, Field(gt=0)] | ScheduleSpec
    args: dict[Identifier, OptaxArgValue] = Field(default_factory=dict)
    clip_grad_norm: Annotated[Number, Field(gt=0)] | None = None
    accumulate: int | None = Field(default=None, ge=1)


class LossSpec(_Section):
    fn: Identifier | ImportPath
    args: dict[Identifier, ArgValue] = Field(default_factory=dict)
    weight: Number = 1.0


class MetricSpec(_Section):
    fn: Identifier | ImportPath
    args: dict[Identifier, ArgValue] = Field(default_factory=dict)


class TrainSpec(_Section):
    epochs: int = Field(ge=1)
    batches_per_epoch: int | None = Field(default=None, ge=1)
    steps_per_call: int = Field(default=1, ge=1)
    nan: Literal["stop", "skip"] = "stop"


class EarlyStoppingSpec(_Section):
    metric: Identifier
    mode: Mode
    patience: int = Field(ge=1)
    min_delta: Number = Field(default=0.0, ge=0)


class ValidationSpec(_Section):
    every: int = Field(default=1, ge=1)
    batches: int | None = Field(default=None, ge=1)


class BestSpec(_Section):
    metric: Identifier
    mode: Mode


class CheckpointSpec(_Section):
    dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    every: int = Field(default=1, ge=1)
    keep: int = Field(default=3, ge=1)
    best: BestSpec | None = None


class ParallelSpec(_Section):
    data: Literal["auto"] | Annotated[int, Field(ge=1)]


class LogSpec(_Section):
    dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    plot: bool = True
    tensorboard: bool = False


class Spec(_Section):
    """A whole spec file, version 1."""

    version: Annotated[Literal[1], BeforeValidator(_not_bool)]
    name: ModuleName
    seed: int = Field(default=0, ge=0)
    model: ModelSpec
    data: DataSpec
    optimizer: OptimizerSpec
    losses: dict[Identifier, LossSpec] = Field(min_length=1)
    metrics: dict[Identifier, MetricSpec] = Field(default_factory=dict)
    train: TrainSpec
    early_stopping: EarlyStoppingSpec | None = None
    validation: ValidationSpec | None = None
    checkpoint: CheckpointSpec | None = None
    parallel: ParallelSpec | None = None
    log: LogSpec | None = None
