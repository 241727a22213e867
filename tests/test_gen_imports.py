"""Compiling a spec never imports jax, flax, optax or orbax: `beagle gen` stays fast.

Checked in fresh interpreters, both through the library (`beagle.compiler.compile_spec`
after `beagle.spec.load_spec`, inspecting `sys.modules`) and through the command line
(`python -X importtime -m beagle gen`, whose import log names every module it loaded).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax")


def heavy_modules(names: list[str]) -> list[str]:
    return sorted(name for name in names if name.split(".")[0] in HEAVY)


def test_compiling_every_spec_imports_no_heavy_library() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from beagle.compiler import compile_spec
        from beagle.spec import load_spec
        for path in sorted(Path("specs").glob("*.yaml")):
            loaded = load_spec(path)
            assert compile_spec(loaded.spec, loaded.source_name).startswith("# Generated")
        print("\\n".join(sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "black" in loaded and "jinja2" in loaded  # the check would be vacuous otherwise
    assert heavy_modules(loaded) == []


def test_beagle_gen_command_imports_no_heavy_library(tmp_path: Path) -> None:
    specs = [str(path) for path in sorted((ROOT / "specs").glob("*.yaml"))]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "beagle", "gen", "--out", str(tmp_path)] + specs,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list(tmp_path.glob("*.py"))) == len(specs)
    # -X importtime writes one "import time: self | cumulative | name" line per module.
    imported = [
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "black" in imported
    assert heavy_modules(imported) == []
