"""The `beagle` command line, run as a real subprocess: check, gen, schema, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def beagle(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "beagle", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def write_spec(path: Path, **changes: object) -> Path:
    """Copy specs/regression_mlp.yaml to `path`, replacing top-level sections."""
    yaml = YAML()
    document = yaml.load((ROOT / "specs" / "regression_mlp.yaml").read_text())
    for key, value in changes.items():
        document[key] = value
    with path.open("w") as stream:
        yaml.dump(document, stream)
    return path


def test_gen_writes_exactly_one_module_per_spec(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = beagle("gen", *map(str, SPECS), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.py" for p in SPECS)
    for spec in SPECS:
        assert (out / f"{spec.stem}.py").read_text() == (
            ROOT / "generated" / f"{spec.stem}.py"
        ).read_text()


def test_gen_check_reports_stale_module_with_diff_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = ROOT / "specs" / "regression_mlp.yaml"
    assert beagle("gen", str(spec), "--out", str(out)).returncode == 0
    assert beagle("gen", "--check", str(spec), "--out", str(out)).returncode == 0
    module = out / "regression_mlp.py"
    module.write_text(module.read_text().replace("learning_rate=0.001", "learning_rate=0.5"))
    stale = module.read_text()
    result = beagle("gen", "--check", str(spec), "--out", str(out))
    assert result.returncode == 1
    assert "-    return optax.adam(learning_rate=0.5)" in result.stdout
    assert "+    return optax.adam(learning_rate=0.001)" in result.stdout
    assert "beagle gen" in result.stderr
    assert module.read_text() == stale
    # With several specs, the advice names only the stale one.
    other = ROOT / "specs" / "vae.yaml"
    assert beagle("gen", str(other), "--out", str(out)).returncode == 0
    result = beagle("gen", "--check", str(spec), str(other), "--out", str(out))
    assert result.returncode == 1
    assert f"run `beagle gen {spec} --out {out}`" in result.stderr


def test_invalid_spec_exits_2_without_traceback_and_writes_nothing(tmp_path: Path) -> None:
    good = write_spec(tmp_path / "good.yaml")
    bad = write_spec(
        tmp_path / "bad.yaml",
        name="bad",
        losses={
            "mse": {"fn": "mse", "args": {"predictions": "outputs.preds", "targets": "batch.y"}}
        },
    )
    out = tmp_path / "out"
    for command in ("gen", "check"):
        args = [command, str(good), str(bad)] + (["--out", str(out)] if command == "gen" else [])
        result = beagle(*args, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert f"{bad}:13:" in result.stderr or "bad.yaml:" in result.stderr
        assert "'outputs.preds' is not a declared model output" in result.stderr
    assert not out.exists()  # a spec set with any problem is never half-compiled


def test_run_rejects_invalid_override_with_exit_2(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml")
    result = beagle("run", str(spec), "--set", "train.epoch=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "train.epoch" in result.stderr and "train.epochs" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_check_traces_steps_and_reports_shape_mismatch_at_the_reference(
    tmp_path: Path,
) -> None:
    # The model's output is 3 wide, the targets 1: a trace-time error, not a broadcast.
    spec = write_spec(
        tmp_path / "spec.yaml",
        model={"class": "beagle.models:MLP", "args": {"features": [8, 3]}},
    )
    result = beagle("check", str(spec), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "mse" in result.stderr and "shape" in result.stderr
    assert str(spec) in result.stderr or "spec.yaml:" in result.stderr


def test_check_accepts_every_example_spec() -> None:
    result = beagle("check", *map(str, SPECS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(SPECS)


def test_schema_is_json_schema_that_validates_every_spec_and_rejects_a_bad_one() -> None:
    result = beagle("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    yaml = YAML(typ="safe")
    for spec in SPECS:
        jsonschema.validate(yaml.load(spec.read_text()), schema)
    bad = yaml.load(SPECS[0].read_text())
    bad["train"]["epochs"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_help_and_version_do_not_import_jax() -> None:
    for args in (["check", "--help"], ["gen", "--help"], ["--version"]):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "beagle", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        modules = {
            line.rsplit("|", 1)[1].strip()
            for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line
        }
        assert "typer" in modules  # the check would be vacuous otherwise
        assert not {m for m in modules if m.split(".")[0] in {"jax", "flax", "optax", "orbax"}}


def test_unknown_command_and_missing_argument_are_usage_errors() -> None:
    assert beagle("train", "x.yaml").returncode == 2
    assert beagle("run").returncode == 2


def test_console_script_finds_user_packages_in_current_directory(tmp_path: Path) -> None:
    exe = shutil.which("beagle", path=str(Path(sys.executable).parent))
    assert exe is not None
    (tmp_path / "mylosses.py").write_text(
        "import jax.numpy as jnp\n\ndef sq(p, t):\n    return jnp.mean((p - t) ** 2)\n"
    )
    spec = write_spec(
        tmp_path / "spec.yaml",
        losses={"sq": {"fn": "mylosses:sq", "args": {"p": "outputs.outputs", "t": "batch.y"}}},
    )
    result = subprocess.run(
        [exe, "check", str(spec)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_bad_spec_is_reported_before_joining_other_processes(tmp_path: Path) -> None:
    """The spec is validated before the process waits for a coordinator that is not there."""
    spec = write_spec(tmp_path / "spec.yaml")
    spec.write_text(spec.read_text().replace("epochs:", "epochz:"))
    started = time.monotonic()
    result = beagle(
        "run",
        str(spec),
        "--coordinator",
        "127.0.0.1:9",  # the discard port: nobody listens
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--connect-timeout",
        "120",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "spec.yaml:" in result.stderr and "epochz" in result.stderr
    assert "coordinator" not in result.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()


def test_gen_refuses_an_out_that_is_a_file_and_two_specs_of_one_name(tmp_path: Path) -> None:
    spec = ROOT / "specs" / "regression_mlp.yaml"
    (tmp_path / "a_file").write_text("")
    result = beagle("gen", "--out", str(tmp_path / "a_file"), str(spec))
    assert result.returncode == 2, result.stderr
    assert "a_file is a file, not a folder" in result.stderr and "Traceback" not in result.stderr
    twin = tmp_path / "twin.yaml"
    twin.write_text(spec.read_text())
    result = beagle("gen", "--out", str(tmp_path / "g"), str(spec), str(twin))
    assert result.returncode == 2, result.stderr
    assert f"{twin}:" in result.stderr and str(spec) in result.stderr
    assert "same name 'regression_mlp'" in result.stderr
    assert not (tmp_path / "g").exists()


def test_help_shows_flags_as_flags_and_run_takes_them_without_a_value() -> None:
    """A flag's help shows no value (`--restart  Start over`), not `--restart <bool>`, which
    led a new user to type `--restart true`."""
    for command in ("run", "gen", "check"):
        shown = beagle(command, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "<bool>" not in shown.stdout, shown.stdout
    run_help = beagle("run", "--help").stdout
    flag_lines = [line.split() for line in run_help.splitlines() if "--restart" in line]
    assert flag_lines and flag_lines[0][:2] == ["--restart", "Start"], run_help
    assert "--set KEY=VALUE" in run_help  # options that take a value still show it
