"""beagle's modules import each other without a cycle.

`runner/wiring.py` and `runner/trace.py` once imported each other inside functions, a
cycle that only function-local imports kept from failing. Two checks keep a new one out:
the import graph of every `beagle` module, read from the source (imports inside
functions included), has no cycle; and each runner module imports on its own in a fresh
interpreter, which fails on a top-level cycle whatever the order of first imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "beagle"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _imports(name: str, path: Path) -> set[str]:
    """The beagle modules `name` imports anywhere in its source (a package's own names: it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in MODULES:
                    found.add(target)
                elif base in MODULES:
                    found.add(base)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_graph_reader_sees_imports_inside_functions() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert "beagle.runner.wiring" in graph["beagle.runner.trace"]  # top level
    assert "beagle.compiler" in graph["beagle.runner.trace"]  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_beagle_modules_import_each_other_without_a_cycle() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_each_runner_module_imports_alone_in_a_fresh_interpreter() -> None:
    runner = sorted(name for name in MODULES if name.startswith("beagle.runner"))
    assert len(runner) >= 8
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in runner
    }
    failures = {}
    for name, process in processes.items():
        _, stderr = process.communicate(timeout=120)
        if process.returncode:
            failures[name] = stderr.strip().splitlines()[-1]
    assert not failures, failures


HEAVY = ("matplotlib", "orbax", "tensorboardX", "grain", "sklearn", "keras")
"""Imported only when first needed: plots, checkpoints, TensorBoard, example sources."""


def _imported(code: str) -> set[str]:
    """The top-level packages imported when `code` has run in a fresh interpreter."""
    report = "import sys; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "BEAGLE_CACHE_DIR": "off"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))


def test_the_cli_and_the_runtime_import_no_heavy_module() -> None:
    cli = _imported("import beagle.cli")  # what `beagle --help` and `beagle run --help` load
    assert not cli & {"jax", "flax", "optax", *HEAVY}, sorted(cli & {"jax", *HEAVY})
    runtime = _imported("import beagle.training")
    assert {"jax", "flax", "optax"} <= runtime
    unwanted = {*HEAVY, "black", "jinja2", "pydantic"}
    assert not runtime & unwanted, sorted(runtime & unwanted)


# Runs `beagle run`; at the first step, prints the packages imported so far, and stops.
FIRST_STEP = """\
import sys
import beagle.training

def first_step(*args, **kwargs):
    print(sorted({m.split('.')[0] for m in sys.modules} | ({"flax.nnx"} & set(sys.modules))))
    raise SystemExit(0)

beagle.training.train_loop = first_step
from beagle.cli import main
sys.argv[0] = "beagle"
main()
"""


def test_a_run_imports_no_heavy_module_and_a_warm_one_not_the_compiler(
    tmp_path: Path,
) -> None:
    spec = """\
version: 1
name: light
model: {class: beagle.models:MLP, args: {features: [2]}}
data: {source: synthetic, task: classification, examples: 256, features: 8, batch_size: 32}
optimizer: {name: sgd, learning_rate: 0.1}
losses:
  ce: {fn: softmax_cross_entropy, args: {logits: outputs.outputs, labels: batch.y}}
train: {epochs: 1}
log: {plot: false}
"""
    (tmp_path / "light.yaml").write_text(spec)
    (tmp_path / "first_step.py").write_text(FIRST_STEP)

    def imported_by_run() -> set[str]:
        done = subprocess.run(
            [sys.executable, "first_step.py", "run", "light.yaml", "--no-progress"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "BEAGLE_CACHE_DIR": str(tmp_path / "c")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))

    cold = imported_by_run()
    assert {"jax", "flax", "optax", "black", "jinja2"} <= cold  # it generated the module
    assert not cold & set(HEAVY), sorted(cold & set(HEAVY))
    assert "flax.nnx" not in cold  # a linen model's run has no use for it (~0.13 s)
    # a repeated run reads the generated module from the cache: no jinja2, no black
    warm = imported_by_run()
    assert {"jax", "flax", "optax"} <= warm  # it did get to the first step
    assert not warm & {*HEAVY, "black", "jinja2"}, sorted(warm & {*HEAVY, "black", "jinja2"})
