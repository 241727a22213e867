"""`beagle run`: compile a spec into its run folder, wire it up, train it, write the files.

`run.py` holds `run_spec`; `wiring` builds model, data and state; `resume` decides what an
existing checkpoint folder means; `artifacts` and `summary` write and show the results;
`trace` is `beagle check`'s `eval_shape` pass.
"""

from beagle.runner.result import Best, BestCheckpoint, RunRefused, RunResult
from beagle.runner.run import run_spec
from beagle.runner.summary import print_summary, summary_renderable
from beagle.runner.trace import trace_spec

__all__ = [
    "Best",
    "BestCheckpoint",
    "RunRefused",
    "RunResult",
    "print_summary",
    "run_spec",
    "summary_renderable",
    "trace_spec",
]
