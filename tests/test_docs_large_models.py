"""The examples of docs/large_models.md run, in order, in one namespace."""

import pathlib
import re

import pytest

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "large_models.md"


@pytest.mark.slow
def test_large_models_page_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace = {}
    for block in blocks:
        try:
            exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102
        except Exception as err:  # name the block that failed
            pytest.fail(f"example failed with {type(err).__name__}: {err}\n{block}")
    out = capsys.readouterr().out
    assert "['attn']" in out and "{'attn': (4,)}" in out and "bfloat16" in out
