"""The environment of the benchmarks' timed child processes.

An installed beagle is imported from bytecode (pip compiles a wheel's modules on
install). A shell with `PYTHONDONTWRITEBYTECODE=1` would make every child compile beagle's
sources again at each start and charge that to beagle's import time, so the children run
without it, after beagle's bytecode has been written once, before any timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """os.environ with beagle on PYTHONPATH, bytecode allowed and written, and `extra`."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "beagle")], env=env, check=True
    )
    return env
