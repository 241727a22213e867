"""Whose code raised: only the user's code (or a non-finite loss) fails training."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from beagle.runner.origin import raised_in_user_code


def _user_module(tmp_path: Path, source: str) -> ModuleType:
    path = tmp_path / "user_code.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("user_code", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_error_raised_in_user_code_is_theirs(tmp_path: Path) -> None:
    user = _user_module(tmp_path, "def loss(x):\n    raise ValueError('bad loss')\n")
    with pytest.raises(ValueError) as caught:
        user.loss(1)
    assert raised_in_user_code(caught.value)


def test_an_error_passing_through_user_code_is_theirs(tmp_path: Path) -> None:
    """A user's model calling into jax wrongly: raised in jax, but through their frame."""
    user = _user_module(
        tmp_path,
        "import jax.numpy as jnp\ndef model(x):\n    return jnp.dot(x, x[:, None, None])\n",
    )
    import jax.numpy as jnp

    with pytest.raises(TypeError) as caught:
        user.model(jnp.ones((3,)))
    assert raised_in_user_code(caught.value)


def test_an_error_inside_beagle_and_its_libraries_is_not_the_users() -> None:
    import jinja2

    from beagle.compiler import render

    environment = jinja2.Environment(loader=jinja2.DictLoader({}))
    with pytest.raises(jinja2.TemplateNotFound) as caught:
        environment.get_template(render.MODULE_TEMPLATE)
    assert not raised_in_user_code(caught.value)


def test_an_internal_error_raised_while_handling_a_users_error_counts_as_theirs(
    tmp_path: Path,
) -> None:
    user = _user_module(tmp_path, "def data():\n    raise OSError('disk gone')\n")
    with pytest.raises(KeyError) as caught:
        try:
            user.data()
        except OSError:
            raise KeyError("while reporting") from None
    assert raised_in_user_code(caught.value)
