"""The README's Python examples run, in order, in one namespace (like a reader pasting them)."""

import pathlib
import re

import jax.numpy as jnp
import pytest
from flax import nnx

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


class _Model(nnx.Module):
    """The smallest model the routing example can describe."""

    def __init__(self, rngs):
        self.embed = nnx.Embed(32, 8, rngs=rngs)
        self.hidden = nnx.Linear(8, 16, rngs=rngs)


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 4


@pytest.mark.slow  # every example, each compiling its optimizer
def test_readme_examples_run(capsys):
    namespace = {"nnx": nnx, "model": _Model(nnx.Rngs(0)), "jnp": jnp}
    for block in _python_blocks():
        try:
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
        except Exception as err:  # name the block that failed
            pytest.fail(f"README example failed with {type(err).__name__}: {err}\n{block}")
    assert "matrix" in capsys.readouterr().out.lower()
