"""Placement on a `data x fsdp` device mesh: one process, many devices (SPEC-2 section 1).

The rule:

- The mesh is `data x fsdp` devices, the first `data * fsdp` of `jax.devices()`, built by
  `jax.make_mesh` with `AxisType.Auto` on both axes. `data="auto"` is every device
  divided by `fsdp`.
- A batch is split along its batch axis (axis 0; axis 1 of a `steps_per_call`-stacked
  call) over both mesh axes. A leaf whose batch axis does not divide by `data * fsdp` (a
  validation remainder smaller than the mesh) is replicated on every device instead.
- With `fsdp == 1` the state is replicated. With `fsdp == M`, each array of at least
  2**14 elements is split over `fsdp` along its largest axis that divides by `M` (on ties,
  the last such axis); smaller arrays, scalars and everything under a `batch_stats` key
  are replicated. The rule looks at shapes only, so optimizer state (Adam's `mu` and `nu`)
  follows its parameter. Every leaf is a global `jax.Array`.
- The generated steps stay plain `jax.jit` functions: `Placement.wrap` puts them in an
  outer `jit` with the state's and the batch's `in_shardings`, the state's
  `out_shardings` (so a step never changes the state's placement) and `donate_argnums=0`;
  jit's own propagation does the rest, so BatchNorm statistics and metrics are computed
  over the global batch. (Placing batches with `device_put` before a plain call cost
  about 10% of a small MLP's steps on one device; with `in_shardings` the ratio is 0.99.)

Several processes (SPEC-2 section 2): the mesh spans every device of every process, and
each process holds only the rows of a global batch that the batch sharding puts on its own
devices. `BatchShare` says which rows those are and assembles each process's rows into
global arrays with `jax.make_array_from_process_local_data`; a batch that runs replicated
(a remainder smaller than the mesh) is read whole by every process.

For a user's own loop: `make_placement(state, data=..., fsdp=...)` gives the mesh, the
state placed on it, its shardings, a batch-placing function and the wrapped steps.
This module imports nothing else from beagle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA = "data"
FSDP = "fsdp"
MIN_SPLIT_SIZE = 2**14
"""Arrays with fewer elements stay replicated under fsdp."""
REPLICATED_KEYS = frozenset({"batch_stats"})
"""State subtrees that are always replicated (BatchNorm statistics)."""

Count = int | Literal["auto"]


def resolve_counts(data: Count, fsdp: int, devices: int) -> tuple[int, int]:
    """`(data, fsdp)` as device counts on a machine with `devices` devices.

    Raises `ValueError` naming the option (`parallel.data` or `parallel.fsdp`) at fault.
    """
    if fsdp < 1:
        raise ValueError(f"parallel.fsdp: must be at least 1, got {fsdp}")
    if data == "auto":
        if devices % fsdp:
            raise ValueError(
                f"parallel.fsdp: data: auto uses all {devices} devices, which do not divide "
                f"by fsdp {fsdp}; set fsdp to a divisor of {devices}"
            )
        return devices // fsdp, fsdp
    if data < 1:
        raise ValueError(f"parallel.data: must be at least 1, got {data}")
    if data * fsdp > devices:
        where = "parallel.fsdp" if fsdp > devices else "parallel.data"
        raise ValueError(
            f"{where}: data {data} x fsdp {fsdp} = {data * fsdp} devices, but this machine "
            f"has {devices} ({jax.default_backend()}); ask for at most {devices}"
        )
    return data, fsdp


def make_mesh(data: int, fsdp: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The `data x fsdp` mesh on the first `data * fsdp` devices."""
    pool = list(jax.devices() if devices is None else devices)[: data * fsdp]
    return jax.make_mesh(
        (data, fsdp), (DATA, FSDP), axis_types=(AxisType.Auto, AxisType.Auto), devices=pool
    )


def split_axis(shape: Sequence[int], fsdp: int) -> int | None:
    """The axis a state array of `shape` is split along under `fsdp`, or None."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SPLIT_SIZE:
        return None
    candidates = [axis for axis, size in enumerate(shape) if size % fsdp == 0]
    if not candidates:
        return None
    # The largest; on ties the last (max keeps the first maximum, so compare (size, axis)).
    return max(candidates, key=lambda axis: (shape[axis], axis))


def _leaf_spec(path: tuple[Any, ...], leaf: Any, fsdp: int) -> PartitionSpec:
    names = {getattr(key, "name", getattr(key, "key", None)) for key in path}
    if names & REPLICATED_KEYS:
        return PartitionSpec()
    axis = split_axis(np.shape(leaf), fsdp)
    if axis is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * axis), FSDP)


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A `NamedSharding` per leaf of `state` (a tree of the same structure), by the rule."""
    fsdp = mesh.shape[FSDP]
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, _leaf_spec(path, leaf, fsdp)), state
    )


def shard(state: Any, mesh: Mesh) -> Any:
    """`state` placed on `mesh` by the rule: every leaf a global array."""
    return jax.device_put(state, state_shardings(state, mesh))


def batch_sharding(mesh: Mesh, shape: Sequence[int], axis: int = 0) -> NamedSharding:
    """The sharding of a batch leaf of `shape`: split along `axis` over both mesh axes, or
    replicated when that axis does not divide by the mesh's devices (a small remainder)."""
    if len(shape) > axis and shape[axis] % mesh.size == 0:
        return NamedSharding(mesh, PartitionSpec(*([None] * axis), (DATA, FSDP)))
    return NamedSharding(mesh, PartitionSpec())


def process_rows(mesh: Mesh, length: int) -> slice:
    """The rows of a global batch of `length` rows that this process's devices hold: all of
    them when the batch runs replicated. Raises `ValueError` if they are not one block."""
    sharding = batch_sharding(mesh, (length,))
    if sharding.is_fully_replicated:
        return slice(0, length)
    indices = sharding.addressable_devices_indices_map((length,)).values()
    held = sorted({index[0].indices(length)[:2] for index in indices if index is not None})
    start, stop = held[0]
    for lo, hi in held[1:]:
        if lo != stop:
            raise ValueError(
                f"this process's devices hold rows {held} of a batch of {length}, which are "
                "not one block; beagle needs each process's devices to be adjacent in the mesh"
            )
        stop = hi
    return slice(start, stop)


@dataclasses.dataclass(frozen=True)
class BatchShare:
    """This process's part of each global batch on a mesh that spans several processes.

    A source reads `rows(length)` of each global batch of `length` rows and hands them to
    `assemble`; a source whose function already yields this process's rows (a `python`
    source taking `process_index`) hands them to `assemble_local`.
    """

    mesh: Mesh

    @property
    def process_index(self) -> int:
        return jax.process_index()

    @property
    def process_count(self) -> int:
        return jax.process_count()

    def rows(self, length: int) -> slice:
        """The rows of a global batch of `length` rows that this process reads."""
        return process_rows(self.mesh, length)

    def assemble(self, rows: Any, length: int) -> Any:
        """Global arrays of a batch of `length` rows from this process's `rows` of it."""

        def leaf(local: Any) -> jax.Array:
            shape = (length, *np.shape(local)[1:])
            return jax.make_array_from_process_local_data(
                batch_sharding(self.mesh, shape), local, shape
            )

        return jax.tree.map(leaf, rows)

    def assemble_local(self, rows: Any) -> Any:
        """Global arrays of a batch whose rows every process yields in equal parts, in
        process order. A batch that cannot be split over the mesh is gathered whole onto
        every process and runs replicated."""
        first = jax.tree.leaves(rows)[0]
        length = (np.shape(first)[0] if np.ndim(first) else 0) * self.process_count
        if length and length % self.mesh.size == 0:
            return self.assemble(rows, length)
        from jax.experimental import multihost_utils

        whole = multihost_utils.process_allgather(rows, tiled=True)
        return self.assemble(whole, np.shape(next(iter(jax.tree.leaves(whole))))[0])


def place_batch(batch: Any, mesh: Mesh, axis: int = 0) -> Any:
    """`batch` on `mesh`: each leaf split along `axis`, or replicated when it cannot be."""
    return jax.tree.map(
        lambda leaf: jax.device_put(leaf, batch_sharding(mesh, np.shape(leaf), axis)), batch
    )


def placement_table(state: Any, mesh: Mesh) -> str:
    """One line per state leaf: its path, shape, how it is placed, and bytes per device."""
    shardings = state_shardings(state, mesh)
    rows = [("leaf", "shape", "placement", "bytes/device")]
    leaves = jax.tree_util.tree_leaves_with_path(state)
    for (path, leaf), sharding in zip(leaves, jax.tree.leaves(shardings), strict=True):
        shape = tuple(np.shape(leaf))
        spec = sharding.spec
        split = next((i for i, s in enumerate(spec) if s is not None), None)
        where = "replicated" if split is None else f"split axis {split} over fsdp"
        local = sharding.shard_shape(shape)
        nbytes = int(np.prod(local, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
        rows.append((jax.tree_util.keystr(path), str(shape), where, str(nbytes)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    title = f"mesh data={mesh.shape[DATA]} x fsdp={mesh.shape[FSDP]}"
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([title, *(line.rstrip() for line in lines)])


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh and the shardings of one state on it; see `make_placement`."""

    mesh: Mesh
    state_shardings: Any

    def shard(self, state: Any) -> Any:
        """`state` placed by the rule."""
        return jax.device_put(state, self.state_shardings)

    def place_batch(self, batch: Any, axis: int = 0) -> Any:
        """`batch` placed (axis 1 for a `steps_per_call`-stacked call)."""
        return place_batch(batch, self.mesh, axis)

    def wrap(
        self, step_fn: Callable[..., tuple[Any, Any]], *, donate: bool = True, axis: int = 0
    ) -> Callable[..., tuple[Any, Any]]:
        """`step_fn(state, batch, rng_key)` in an outer jit whose `in_shardings` place the
        batch (host arrays go straight to their shards), whose outputs keep the state's
        shardings, and which (with `donate`) donates the state. One jit per batch layout:
        a validation remainder smaller than the mesh compiles once more, replicated."""
        replicated = NamedSharding(self.mesh, PartitionSpec())
        devices = self.mesh.size
        jitted: dict[Any, Callable[..., tuple[Any, Any]]] = {}
        # XLA's CPU collectives deadlock (a 40 s rendezvous timeout, then an abort) when
        # several multi-device steps are in flight on a machine with fewer cores than
        # devices; on the CPU each such step is waited for. GPUs and TPUs run ahead.
        wait = devices > 1 and self.mesh.devices.flat[0].platform == "cpu"

        def step(state: Any, batch: Any, rng_key: jax.Array) -> tuple[Any, Any]:
            leaves, treedef = jax.tree.flatten(batch)
            layout = (treedef, tuple(np.shape(leaf) for leaf in leaves))
            fn = jitted.get(layout)
            if fn is None:
                shardings = [batch_sharding(self.mesh, shape, axis) for shape in layout[1]]
                fn = jitted[layout] = jax.jit(
                    step_fn,
                    in_shardings=(
                        self.state_shardings,
                        jax.tree.unflatten(treedef, shardings),
                        replicated,
                    ),
                    out_shardings=(self.state_shardings, replicated),
                    donate_argnums=(0,) if donate else (),
                )
            output = fn(state, batch, rng_key)
            return jax.block_until_ready(output) if wait else output

        return step

    def table(self, state: Any) -> str:
        """The printable placement of `state`."""
        return placement_table(state, self.mesh)

    @property
    def share(self) -> BatchShare:
        """Global batches from this process's rows (for a mesh over several processes)."""
        return BatchShare(self.mesh)


def make_placement(
    state: Any, *, data: Count = "auto", fsdp: int = 1, devices: Sequence[jax.Device] | None = None
) -> tuple[Placement, Any]:
    """The placement for `data x fsdp` devices and `state` placed by it.

    ```python
    placement, state = make_placement(state, data="auto", fsdp=2)
    train_step = placement.wrap(module.train_step)  # places each batch, donates state
    state, metrics = train_step(state, batch, key)
    ```
    """
    pool = list(jax.devices() if devices is None else devices)
    data_count, fsdp_count = resolve_counts(data, fsdp, len(pool))
    mesh = make_mesh(data_count, fsdp_count, pool)
    placement = Placement(mesh, state_shardings(state, mesh))
    return placement, placement.shard(state)
