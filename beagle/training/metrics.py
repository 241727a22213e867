"""Metrics: the seed's host-side helpers and the loop's on-device epoch sums.

`Metrics`, `average_metrics` and `format_metrics` are the public helpers for code that
holds metrics on the host. `StepMetricSums` is what `train_loop` uses: steps append their
metric dicts (device arrays, never fetched), and every so many calls one jitted `fold`
turns the pending ones into weighted sums on the device. The host reads the sums once per
epoch (`read_sums`, one transfer for the train and validation sums), so no step waits
for the host.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from beagle.xla import CHEAP_COMPILE

SKIPPED_STEPS = "skipped_steps"
"""The 0/1 metric a step returns when it skipped a non-finite update; counted, not averaged."""

LOSS_SCALE_SKIPS = "loss_scale_skips"
"""The 0/1 metric of a float16 step whose gradients overflowed (the loss scale shrank and the
state was kept); counted, not averaged, and never a fault."""

COUNT_METRICS = frozenset({SKIPPED_STEPS, LOSS_SCALE_SKIPS})
"""Metrics that count steps (summed per epoch), not values to average."""

_NO_BAD_STEP = int(np.iinfo(np.int32).max)


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Named scalar values of one batch (or a mean of several), with the weight they carry."""

    values: Mapping[str, float]
    weight: float = 1.0

    def merge(self, other: Metrics) -> Metrics:
        """The weighted mean of `self` and `other`."""
        return average_metrics([self, other])


def average_metrics(batch_metrics: Sequence[Metrics | Mapping[str, Any]]) -> Metrics:
    """Weighted mean of each metric over the batches that report it.

    Plain mappings weigh 1. `average_metrics([Metrics(values={"loss": 1.0}),
    Metrics(values={"loss": 2.0})]).values == {"loss": 1.5}`.
    """
    if not batch_metrics:
        raise ValueError("average_metrics needs at least one Metrics")
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    total = 0.0
    for item in batch_metrics:
        values, weight = (item.values, item.weight) if isinstance(item, Metrics) else (item, 1.0)
        total += weight
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + float(value) * weight
            weights[name] = weights.get(name, 0.0) + weight
    means = {name: (sums[name] / weights[name] if weights[name] else math.nan) for name in sums}
    return Metrics(values=means, weight=total)


def format_metrics(metrics: Metrics | Mapping[str, Any], precision: int = 4) -> str:
    """`"loss: 1.5000, accuracy: 0.9000"`: each metric with `precision` decimals."""
    values = metrics.values if isinstance(metrics, Metrics) else metrics
    return ", ".join(f"{name}: {float(value):.{precision}f}" for name, value in values.items())


@dataclasses.dataclass(frozen=True)
class SumsOnHost:
    """An epoch's (or a validation's) sums, fetched: means and the first non-finite step."""

    means: dict[str, float]
    skipped: float
    bad_step: int | None
    bad_names: tuple[str, ...]
    scale_skips: float | None = None  # None: the steps do no loss scaling

    def history_values(self, has_skipped: bool) -> dict[str, float]:
        """The epoch's history entry: means, and `skipped_steps`/`loss_scale_skips` as counts."""
        values = dict(self.means)
        if has_skipped:
            values[SKIPPED_STEPS] = self.skipped
        if self.scale_skips is not None:
            values[LOSS_SCALE_SKIPS] = self.scale_skips
        return values


FOLD_STEPS = 256
"""Steps one fold covers: the pending calls are padded to `FOLD_STEPS // steps_per_call`
(masked out), so the fold compiles once per metrics structure, whatever the count. Its
dispatch costs ~1 us per metric and step on a CPU (one argument each), so 256 (the loop's
chunk) makes one dispatch per 256 steps."""


def _averaged(names: Iterable[str]) -> list[str]:
    """The metrics averaged over the steps, in the fold's order (pytree order: sorted)."""
    return sorted(name for name in names if name not in COUNT_METRICS)


# The carry, packed so that the fold is a handful of XLA kernels whatever the number of
# metrics (XLA's CPU compile time grows with each reduction and output, ~20-50 ms each):
#   sums: float32[M + 3]  the size-weighted sums of the M averaged metrics (sorted), then
#                         the total weight, the skipped steps and the loss-scale skips
#   bad_step: int32       the first bad step (or _NO_BAD_STEP)
#   bad:  bool[M]         which metrics were not finite at the first bad step
_WEIGHT, _SKIPPED, _SCALE_SKIPS = 0, 1, 2  # offsets after the M sums


def _empty_carry(names: Sequence[str]) -> dict[str, Any]:
    """Zero sums for averaged metrics `names`, made on the host and transferred (no
    device program makes them), placed like the fold's outputs."""
    carry = {
        "sums": np.zeros(len(names) + 3, np.float32),
        "bad_step": np.asarray(_NO_BAD_STEP, np.int32),
        "bad": np.zeros(len(names), bool),
    }
    return jax.device_put(carry)


def _unpack(host: Mapping[str, Any], names: Sequence[str], scaled: bool) -> dict[str, Any]:
    """A packed carry, read to the host, as named values (what `to_json` records)."""
    m = len(names)
    sums, bad = np.asarray(host["sums"]), np.asarray(host["bad"])
    out: dict[str, Any] = {
        "sums": {name: sums[i] for i, name in enumerate(names)},
        "weight": sums[m + _WEIGHT],
        "skipped": sums[m + _SKIPPED],
        "bad_step": np.asarray(host["bad_step"]),
        "bad": {name: bad[i] for i, name in enumerate(names)},
    }
    if scaled:
        out["scale_skips"] = sums[m + _SCALE_SKIPS]
    return out


def _pack(named: Mapping[str, Any]) -> dict[str, Any]:
    """`_unpack`'s inverse, on the host (names in sorted order)."""
    names = _averaged(named["sums"])
    sums = [named["sums"][name] for name in names]
    sums += [named["weight"], named["skipped"], named.get("scale_skips", 0.0)]
    return {
        "sums": np.asarray(sums, np.float32),
        "bad_step": np.asarray(named["bad_step"], np.int32),
        "bad": np.asarray([named["bad"][name] for name in names], bool).reshape(len(names)),
    }


@functools.partial(jax.jit, compiler_options=CHEAP_COMPILE)  # trivial arithmetic
def _fold(
    carry: dict[str, Any],
    pending: list[Mapping[str, jax.Array]],
    sizes: jax.Array,
    valid: jax.Array,
    first_index: jax.Array,
    stop_on_skipped: jax.Array,
) -> dict[str, Any]:
    every = list(pending[0])  # sorted: the dicts were flattened as pytrees
    width = sizes.shape[0]
    # one table of every metric of every step: a row per metric, a column per step
    flat = jnp.concatenate(
        [jnp.reshape(m[name], (-1,)).astype(jnp.float32) for name in every for m in pending]
    )
    table = flat.reshape(len(every), width)
    row = {name: table[i] for i, name in enumerate(every)}
    names = _averaged(every)
    values = jnp.stack([row[name] for name in names]) if names else jnp.zeros((0, width))
    no = jnp.zeros(width, bool)
    skipped = valid & (row[SKIPPED_STEPS] > 0.5 if SKIPPED_STEPS in row else no)
    # A float16 overflow is the loss scale's business: left out of the means, never a fault.
    overflowed = valid & (row[LOSS_SCALE_SKIPS] > 0.5 if LOSS_SCALE_SKIPS in row else no)
    counted = valid & ~skipped & ~overflowed
    finite = jnp.isfinite(values)
    all_finite = functools.reduce(jnp.logical_and, list(finite), jnp.ones(width, bool))
    # An argument, not a static one: the train and validation sums share one program.
    bad = valid & jnp.where(
        stop_on_skipped, (~all_finite & ~overflowed) | skipped, counted & ~all_finite
    )
    # One sum and one min over rows: the sums, then the first bad step and, per metric, the
    # first bad step where it is not finite (equal to the first bad step: it is to blame).
    f32 = jnp.float32
    summed = jnp.sum(
        jnp.concatenate(
            [
                jnp.where(counted, values * sizes, 0.0),
                jnp.stack(
                    [jnp.where(counted, sizes, 0.0), skipped.astype(f32), overflowed.astype(f32)]
                ),
            ]
        ),
        axis=1,
    )
    steps = jnp.arange(width, dtype=jnp.int32)
    firsts = jnp.min(
        jnp.where(jnp.concatenate([bad[None], ~finite & bad]), steps, _NO_BAD_STEP), axis=1
    )
    newly_bad = (carry["bad_step"] == _NO_BAD_STEP) & (firsts[0] != _NO_BAD_STEP)
    return {
        "sums": carry["sums"] + summed,
        "bad_step": jnp.where(newly_bad, first_index + firsts[0], carry["bad_step"]),
        "bad": jnp.where(newly_bad, firsts[1:] == firsts[0], carry["bad"]),
    }


def _fold_padded(
    carry: dict[str, Any] | None,
    pending: Sequence[Mapping[str, jax.Array]],
    sizes: Sequence[int],
    first_index: int,
    *,
    stop_on_skipped: bool,
) -> dict[str, Any]:
    """Fold `pending` in calls of `_fold` over a fixed number of calls (the last padded
    with repeats of a real call, masked out): one compilation per metrics structure."""
    per_call = len(sizes) // len(pending)
    capacity = max(1, FOLD_STEPS // per_call)
    if carry is None:
        carry = _empty_carry(_averaged(pending[0]))
    for start in range(0, len(pending), capacity):
        part = list(pending[start : start + capacity])
        real = len(part) * per_call
        padding = capacity - len(part)
        part.extend([part[-1]] * padding)
        part_sizes = np.zeros(capacity * per_call, np.float32)
        part_sizes[:real] = sizes[start * per_call : start * per_call + real]
        valid = np.zeros(capacity * per_call, bool)
        valid[:real] = True
        carry = _fold(
            carry,
            part,
            part_sizes,
            valid,
            np.int32(first_index + start * per_call),
            np.bool_(stop_on_skipped),
        )
    return carry


class StepMetricSums:
    """Metrics of one epoch (or one validation), summed on the device.

    `add` only keeps references; `fold` dispatches one jitted call that folds the pending
    steps into the sums (each batch weighs by its size; steps whose `skipped_steps` or
    `loss_scale_skips` is 1 are left out of the means and counted). `stop_on_skipped`
    makes a skipped step count as a fault (`nan_mode="stop"`); a loss-scale skip never is.
    """

    def __init__(
        self, *, stop_on_skipped: bool = True, first_index: int = 0, source: str = "train_step_fn"
    ) -> None:
        self.stop_on_skipped = stop_on_skipped
        self.carry: dict[str, Any] | None = None
        self.pending: list[Mapping[str, jax.Array]] = []
        self.sizes: list[int] = []
        self.first_index = first_index
        self.has_skipped = False
        self.names: frozenset[str] | None = None  # every step's metric names, once known
        self.source = source  # the step function, for error messages

    def add(self, metrics: Mapping[str, jax.Array], sizes: Sequence[int]) -> None:
        """Keep one call's metrics (scalars, or a leading axis of len(sizes)) for the fold."""
        self.pending.append(metrics)
        self.sizes.extend(sizes)

    def add_step(self, metrics: Mapping[str, jax.Array], size: int) -> None:
        """`add` for one step of one batch (the loop's hot path)."""
        self.pending.append(metrics)
        self.sizes.append(size)

    def fold(self) -> None:
        """Fold the pending steps into the on-device sums (one dispatch, no host wait)."""
        if not self.pending:
            return
        steps_per_call = len(self.sizes) // len(self.pending)
        self.names = _check_names(
            self.pending, self.names, self.first_index, steps_per_call, self.source
        )
        _check_shapes(self.pending[0], steps_per_call)
        self.has_skipped = self.has_skipped or SKIPPED_STEPS in self.pending[0]
        self.carry = _fold_padded(
            self.carry,
            self.pending,
            self.sizes,
            self.first_index,
            stop_on_skipped=self.stop_on_skipped,
        )
        self.first_index += len(self.sizes)
        self.pending = []
        self.sizes = []

    def fetch(self) -> SumsOnHost | None:
        """Fold, then read the sums to the host: the one device-to-host transfer."""
        return read_sums([self])[0]

    def peek(self) -> SumsOnHost | None:
        """The sums including pending steps, read without folding them (keeps chunking)."""
        carry, names = self.carry, self.names
        if self.pending:
            names = _check_names(
                self.pending,
                self.names,
                self.first_index,
                len(self.sizes) // len(self.pending),
                self.source,
            )
            carry = _fold_padded(
                self.carry,
                self.pending,
                self.sizes,
                self.first_index,
                stop_on_skipped=self.stop_on_skipped,
            )
        return _summarize(None if carry is None else self._named(fetch_to_host(carry), names))

    def _named(
        self, host: Mapping[str, Any], names: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """The packed carry, read to the host, as named values."""
        names = self.names if names is None else names
        assert names is not None  # known once anything was folded
        return _unpack(host, _averaged(names), LOSS_SCALE_SKIPS in names)

    def to_json(self) -> dict[str, Any]:
        """The exact on-device state (sums and not yet folded steps) as JSON-able values."""
        carry, pending = fetch_to_host((self.carry, list(self.pending)))
        return {
            "carry": None if carry is None else _encode_tree(self._named(carry)),
            "pending": [_encode_tree(dict(m)) for m in pending],
            "sizes": list(self.sizes),
            "first_index": self.first_index,
            "has_skipped": self.has_skipped,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, stop_on_skipped: bool) -> StepMetricSums:
        """The sums `to_json` recorded, back on the device, bit for bit."""
        sums = cls(stop_on_skipped=stop_on_skipped, first_index=int(data["first_index"]))
        sums.pending = [_decode_tree(m) for m in data["pending"]]
        sums.sizes = [int(s) for s in data["sizes"]]
        sums.has_skipped = bool(data["has_skipped"])
        if data["carry"] is not None:
            named = _decode_tree(data["carry"], on_host=True)
            sums.carry = jax.device_put(_pack(named))
            names = set(named["sums"])
            if sums.has_skipped:
                names.add(SKIPPED_STEPS)
            if "scale_skips" in named:
                names.add(LOSS_SCALE_SKIPS)
            sums.names = frozenset(names)
        return sums


def read_sums(sums: Sequence[StepMetricSums]) -> list[SumsOnHost | None]:
    """Fold each, then read all their sums to the host in one transfer."""
    for item in sums:
        item.fold()
    carries = [item.carry for item in sums]
    hosts = fetch_to_host(carries) if any(c is not None for c in carries) else carries
    return [
        None if host is None else _summarize(item._named(host))
        for item, host in zip(sums, hosts, strict=True)
    ]


def _summarize(host: dict[str, Any] | None) -> SumsOnHost | None:
    if host is None:
        return None
    weight = float(host["weight"])
    bad_step = int(host["bad_step"])
    bad = bad_step != _NO_BAD_STEP
    names = tuple(name for name, flag in host["bad"].items() if bool(flag))
    if bad and not names:
        names = (SKIPPED_STEPS,)
    return SumsOnHost(
        means={
            name: (float(total) / weight if weight else math.nan)
            for name, total in host["sums"].items()
        },
        skipped=float(host["skipped"]),
        bad_step=bad_step if bad else None,
        bad_names=names if bad else (),
        scale_skips=float(host["scale_skips"]) if "scale_skips" in host else None,
    )


def fetch_to_host(tree: Any) -> Any:
    """The loop's only device-to-host read of metrics (explicit, so transfer guards allow it)."""
    return jax.device_get(tree)


def _check_names(
    pending: Sequence[Any],
    names: frozenset[str] | None,
    first_index: int,
    steps_per_call: int,
    source: str,
) -> frozenset[str]:
    """Every call's metrics are a dict with the same names (cheap host-side checks)."""
    for index, metrics in enumerate(pending):
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"{source} must return (state, dict of metrics), e.g. (new_state, "
                f"{{'loss': loss}}); its metrics were a {type(metrics).__name__}: "
                f"{_short(metrics)}"
            )
        if names is None:
            names = frozenset(metrics)
        elif metrics.keys() != names:
            step = first_index + index * steps_per_call
            raise ValueError(
                f"every step must return the same metric names: step {step} (0-based, in the "
                f"epoch) of {source} returned {sorted(metrics)}, expected {sorted(names)}"
            )
    assert names is not None
    return names


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_shapes(metrics: Mapping[str, Any], steps_per_call: int) -> None:
    expected = () if steps_per_call == 1 else (steps_per_call,)
    for name, value in metrics.items():
        shape = tuple(np.shape(value))
        if shape != expected and not (steps_per_call == 1 and shape == (1,)):
            raise ValueError(
                f"metric {name!r} has shape {shape}; a step must return scalar metrics"
                + ("" if steps_per_call == 1 else f" with a leading axis of {steps_per_call}")
            )


def _encode_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            out[name] = {"tree": _encode_tree(value)}
        else:
            array = np.asarray(value)
            out[name] = {
                "dtype": array.dtype.name,
                "shape": list(array.shape),
                "data": [v.item() for v in array.reshape(-1)],
            }
    return out


def _decode_tree(data: Mapping[str, Any], *, on_host: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        if "tree" in value:
            out[name] = _decode_tree(value["tree"], on_host=on_host)
        else:
            array = np.asarray(value["data"], dtype=jnp.dtype(value["dtype"]))
            array = array.reshape(value["shape"])
            out[name] = array if on_host else jnp.asarray(array)
    return out
