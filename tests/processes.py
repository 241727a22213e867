"""Several `beagle run` processes on this machine: gloo on 127.0.0.1, forced CPU devices.

Each process gets its own working folder (`p0`, `p1`, ...) under the test's folder, so a
file written by the wrong process shows up where it does not belong; the checkpoint folder
is an absolute path that all of them share, as a shared filesystem would be.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def environment(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # from the start of the processes to this one's end


def start(
    root: Path,
    spec: Path,
    count: int,
    *args: str,
    devices: int = 2,
    port: int | None = None,
    only: tuple[int, ...] | None = None,
) -> list[subprocess.Popen[str]]:
    """`count` processes of `beagle run SPEC --coordinator ... ARGS`, process i in root/p<i>
    (or only the processes `only` names)."""
    port = port or free_port()
    processes = []
    for index in range(count) if only is None else only:
        folder = root / f"p{index}"
        folder.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "beagle", "run", str(spec), "--no-progress"]
        command += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count)]
        command += ["--process-id", str(index), *args]
        processes.append(
            subprocess.Popen(
                command,
                cwd=folder,
                env=environment(devices),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def finish(processes: list[subprocess.Popen[str]], timeout: float = 300) -> list[Finished]:
    """Wait for every process (killing all of them after `timeout` seconds)."""
    started = time.monotonic()
    results = []
    try:
        for process in processes:
            left = max(1.0, timeout - (time.monotonic() - started))
            out, err = process.communicate(timeout=left)
            results.append(Finished(process.returncode, out, err, time.monotonic() - started))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


def run(root: Path, spec: Path, count: int, *args: str, devices: int = 2) -> list[Finished]:
    return finish(start(root, spec, count, *args, devices=devices))


def one_process(folder: Path, spec: Path, *args: str, devices: int = 4) -> Finished:
    folder.mkdir(exist_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "beagle", "run", str(spec), "--no-progress", *args],
        cwd=folder,
        env=environment(devices),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Finished(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
