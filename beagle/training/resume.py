"""`ResumeRecord`: what a checkpoint holds besides the state, in one typed dataclass.

`train_loop` writes one with every checkpoint and reads it back to resume exactly where it
stopped: the epoch and the position in it, the RNG key, the history, the partial epoch's
metric sums, early stopping and the best checkpoint so far. `save_checkpoint` writes the
same fields, the loop's own left empty (None), so `checkpoint_info` reads every checkpoint
one way. Stored as JSON: `to_json` and `from_json` are the only code that knows its keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from beagle.training.calls import AutoChoice
from beagle.training.history import History, copy_history
from beagle.training.metrics import fetch_to_host

RECORD_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    """A JAX PRNG key as JSON: new-style typed keys and raw uint32 keys alike."""

    typed: bool  # a `jax.random.key` (typed), not a raw `PRNGKey` array
    shape: tuple[int, ...]  # of the key data
    data: tuple[int, ...]  # the key data, flattened

    @classmethod
    def from_key(cls, key: jax.Array) -> KeyRecord:
        """Record `key` (one transfer to the host)."""
        typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        data = np.asarray(fetch_to_host(jax.random.key_data(key) if typed else key))
        return cls(typed, tuple(data.shape), tuple(int(x) for x in data.reshape(-1)))

    def to_key(self, like: jax.Array) -> jax.Array:
        """The recorded key, with the implementation of `like` when typed."""
        data = jnp.asarray(np.asarray(self.data, np.uint32).reshape(self.shape))
        if self.typed:
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(like))
        return data

    def to_json(self) -> dict[str, Any]:
        return {"typed": self.typed, "shape": list(self.shape), "data": list(self.data)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyRecord:
        return cls(
            bool(data["typed"]),
            tuple(int(x) for x in data["shape"]),
            tuple(int(x) for x in data["data"]),
        )


@dataclasses.dataclass(frozen=True)
class ResumeRecord:
    """A checkpoint's record. `epoch` counts completed epochs and `position` the steps done
    in the next one, so `step` is the global step count. The fields from `num_batches` on
    are the loop's: None (or 0) in a checkpoint that `save_checkpoint` wrote."""

    step: int
    epoch: int
    position: int
    finished: bool  # the run that wrote it ended (all its epochs, or early stopping)
    history: History
    metadata: dict[str, str]
    num_batches: int | None = None  # of the epochs the loop ran
    steps_per_call: int | None = None  # the K of the calls (with auto: the choice, else 1)
    validations: int = 0  # validations run so far (so `val_` keys are due to exist)
    rng_key: KeyRecord | None = None  # the loop's root key: step s used fold_in(key, s)
    partial: dict[str, Any] | None = None  # the partial epoch's sums (StepMetricSums.to_json)
    early_stopping: dict[str, Any] | None = None  # EarlyStopping's tracking state
    best: dict[str, Any] | None = None  # the best checkpoint: metric, mode, value, epoch, step
    auto_choice: AutoChoice | None = None  # what steps_per_call="auto" chose, once it has
    format: int = RECORD_FORMAT

    @property
    def from_loop(self) -> bool:
        """Whether `train_loop` wrote it (so it can be resumed), not `save_checkpoint`."""
        return self.rng_key is not None and self.num_batches is not None

    @property
    def stopped_early(self) -> bool:
        """Whether early stopping ended the run that wrote it."""
        return bool((self.early_stopping or {}).get("stopped", False))

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values; every field, always (None where not known)."""
        return {
            "format": self.format,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "finished": self.finished,
            "num_batches": self.num_batches,
            "steps_per_call": self.steps_per_call,
            "history": copy_history(self.history),
            "validations": self.validations,
            "rng_key": None if self.rng_key is None else self.rng_key.to_json(),
            "partial": self.partial,
            "early_stopping": None if self.early_stopping is None else dict(self.early_stopping),
            "best": None if self.best is None else dict(self.best),
            "auto_choice": None if self.auto_choice is None else self.auto_choice.to_json(),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResumeRecord:
        """The record `to_json` wrote (or an older one, whose missing fields are empty)."""

        def optional_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        return cls(
            step=int(data["step"]),
            epoch=int(data.get("epoch", 0)),
            position=int(data.get("position", 0)),
            finished=bool(data.get("finished", False)),
            history=copy_history(data.get("history") or {}),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            num_batches=optional_int("num_batches"),
            steps_per_call=optional_int("steps_per_call"),
            validations=int(data.get("validations") or 0),
            rng_key=None if data.get("rng_key") is None else KeyRecord.from_json(data["rng_key"]),
            partial=None if data.get("partial") is None else dict(data["partial"]),
            early_stopping=(
                None if data.get("early_stopping") is None else dict(data["early_stopping"])
            ),
            best=None if data.get("best") is None else dict(data["best"]),
            auto_choice=(
                None
                if data.get("auto_choice") is None
                else AutoChoice.from_json(data["auto_choice"])
            ),
            format=int(data.get("format", RECORD_FORMAT)),
        )
