"""Several processes (SPEC-2 section 2): join a JAX multi-controller run before training.

`beagle run --coordinator HOST:PORT --num-processes N --process-id I` (or
`--distributed auto`, JAX's own cluster detection for SLURM, Open MPI and Cloud TPU) calls
`jax.distributed.initialize` once, before anything touches a device. On the CPU the
collectives are gloo. Process 0 hosts the coordinator; every other process first checks
that HOST:PORT accepts a connection within `connect_timeout` seconds, so an unreachable
coordinator is a clear error (exit 2) rather than JAX's five-minute wait. A lost process
stops sending heartbeats, and JAX aborts the others after `heartbeat_timeout` seconds.

Once joined, `Team` gives `run_spec` what it needs to act as one run: whether this process
is the one that writes the run folder, a barrier, and process 0's decision for everyone.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from typing import Any

DEFAULT_HEARTBEAT_TIMEOUT = 60
DEFAULT_CONNECT_TIMEOUT = 60


class ClusterError(Exception):
    """Options that cannot start a multi-process run, or a coordinator that cannot be
    reached (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process joins a multi-process run (`beagle run`'s options)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator is not None

    def check(self) -> None:
        """Raise `ClusterError` for options that do not go together."""
        given = {
            "--coordinator": self.coordinator,
            "--num-processes": self.num_processes,
            "--process-id": self.process_id,
        }
        named = [flag for flag, value in given.items() if value is not None]
        if self.auto:
            if named:
                raise ClusterError(
                    f"--distributed auto finds the processes itself; leave out {', '.join(named)}"
                )
        elif named and len(named) < 3:
            missing = [flag for flag in given if flag not in named]
            raise ClusterError(
                f"{', '.join(named)} needs {' and '.join(missing)} as well: every process gets "
                "--coordinator HOST:PORT --num-processes N --process-id I"
            )
        if self.coordinator is not None:
            address(self.coordinator)
        if self.num_processes is not None and self.num_processes < 1:
            raise ClusterError(f"--num-processes must be at least 1, got {self.num_processes}")
        if self.process_id is not None and self.num_processes is not None:
            if not 0 <= self.process_id < self.num_processes:
                raise ClusterError(
                    f"--process-id must be between 0 and {self.num_processes - 1} for "
                    f"--num-processes {self.num_processes}, got {self.process_id}"
                )
        for flag, seconds in (
            ("--heartbeat-timeout", self.heartbeat_timeout),
            ("--connect-timeout", self.connect_timeout),
        ):
            if seconds < 1:
                raise ClusterError(f"{flag} must be at least 1 second, got {seconds}")


def address(text: str) -> tuple[str, int]:
    """`HOST:PORT` as `(host, port)`; raises `ClusterError` naming what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"--coordinator must be HOST:PORT, such as 10.0.0.1:1234 (process 0's address "
            f"and a free port), got {text!r}"
        )
    return host, int(port)


def wait_for_coordinator(coordinator: str, timeout: float) -> None:
    """Return once `coordinator` accepts a TCP connection; `ClusterError` after `timeout`."""
    host, port = address(coordinator)
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(left, 5.0))):
                return
        except OSError as error:
            last = error
        if time.monotonic() + 0.25 >= deadline:
            break
        time.sleep(0.25)
    reason = last.strerror if last is not None and last.strerror else str(last)
    raise ClusterError(
        f"cannot reach the coordinator {coordinator} within {timeout:g} s ({reason}); start "
        "process 0 (--process-id 0) on that host, check the address and that the port is "
        "open, or raise --connect-timeout"
    )


def initialize(cluster: Cluster) -> None:
    """Join the run `cluster` describes (nothing to do for one process)."""
    if not cluster.enabled:
        return
    cluster.check()
    import jax

    # Only the CPU backend reads it; GPUs and TPUs keep their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if cluster.auto:
        try:
            jax.distributed.initialize(
                initialization_timeout=cluster.connect_timeout,
                heartbeat_timeout_seconds=cluster.heartbeat_timeout,
            )
        except (RuntimeError, ValueError) as error:
            raise ClusterError(
                f"--distributed auto could not join a run: {first_line(error)}; outside "
                "SLURM, Open MPI or a Cloud TPU slice, give --coordinator, --num-processes "
                "and --process-id"
            ) from None
        return
    assert cluster.coordinator is not None
    if cluster.process_id != 0:
        wait_for_coordinator(cluster.coordinator, cluster.connect_timeout)
    # JAX aborts the process (SIGABRT and a C++ stack) when the others do not register in
    # time; the watchdog ends it first, with a message and exit 2.
    joined = threading.Event()
    watchdog = threading.Thread(
        target=_give_up_unless,
        args=(joined, cluster),
        name="beagle-join-watchdog",
        daemon=True,
    )
    watchdog.start()
    try:
        jax.distributed.initialize(
            cluster.coordinator,
            cluster.num_processes,
            cluster.process_id,
            initialization_timeout=cluster.connect_timeout + JOIN_MARGIN,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout,
        )
    except (RuntimeError, ValueError) as error:
        raise ClusterError(
            f"process {cluster.process_id} of {cluster.num_processes} could not join the run "
            f"at {cluster.coordinator}: {first_line(error)}"
        ) from None
    finally:
        joined.set()


JOIN_MARGIN = 10
"""Seconds JAX's own registration timeout is given beyond `connect_timeout`."""


def _give_up_unless(joined: threading.Event, cluster: Cluster) -> None:
    """Exit 2 with a message unless `joined` is set within `cluster.connect_timeout`."""
    if joined.wait(cluster.connect_timeout):
        return
    waiting = "the other processes" if cluster.process_id == 0 else "all processes"
    sys.stderr.write(
        f"beagle run: process {cluster.process_id} of {cluster.num_processes} waited "
        f"{cluster.connect_timeout} s at {cluster.coordinator} for {waiting} to join; start "
        f"every process with --num-processes {cluster.num_processes} and the same "
        "--coordinator, or raise --connect-timeout\n"
    )
    sys.stderr.flush()
    os._exit(2)  # nothing is written before every process has joined


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclasses.dataclass(frozen=True)
class Team:
    """The processes of one run, as `run_spec` sees them (one process: a team of one)."""

    index: int
    count: int

    @classmethod
    def current(cls) -> Team:
        import jax

        return cls(jax.process_index(), jax.process_count())

    @property
    def writes(self) -> bool:
        """Whether this process writes the run folder and prints (process 0)."""
        return self.index == 0

    def barrier(self, name: str) -> None:
        """Wait until every process reaches the barrier `name`."""
        if self.count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def gather(self, value: int) -> list[int]:
        """Every process's `value`, in process order, on every process."""
        if self.count == 1:
            return [value]
        import numpy as np
        from jax.experimental import multihost_utils

        values: Any = multihost_utils.process_allgather(np.asarray([value], np.int64))
        return [int(v) for v in np.asarray(values).reshape(-1)]


ONE_PROCESS = Team(0, 1)
"""The team of a run on one process."""
