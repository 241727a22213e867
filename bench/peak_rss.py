"""Run a command; write its wall time, exit code and own peak RSS to a JSON file.

    python bench/peak_rss.py RESULT.json COMMAND [ARG ...]

`bench_speed.py` starts its process rows through this small launcher because Linux
carries a process's peak RSS across `fork` and `exec`: a child started straight from the
benchmark (which holds jax, and Keras, in memory) would report at least the benchmark's
own peak. Started from this launcher, the child's peak is its own. Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    result, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    with open(result, "w") as f:
        json.dump({"seconds": seconds, "returncode": code, "maxrss_kib": usage.ru_maxrss}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
