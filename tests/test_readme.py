"""Every Python example of the README, and of the docs pages that show standalone snippets,
runs alone: each block in a fresh namespace, as a reader pastes just that one block."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Docs pages whose every block is self-contained (others run in order: their own tests).
STANDALONE_PAGES = [ROOT / "docs" / name for name in ("guide.md", "faq.md", "api/nn.md")]


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def _cases():
    for path in [README, *STANDALONE_PAGES]:
        for index, block in enumerate(_python_blocks(path)):
            yield pytest.param(path, block, id=f"{path.relative_to(ROOT)}[{index}]")


def _run_alone(path: pathlib.Path, block: str) -> None:
    namespace = {"__name__": "__main__"}  # nothing from another block or from this test
    try:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102
    except Exception as err:  # name the block that failed
        pytest.fail(f"{path.name} example failed alone with {type(err).__name__}: {err}\n{block}")


def test_readme_has_python_examples():
    assert len(_python_blocks(README)) >= 2
    assert all(_python_blocks(page) for page in STANDALONE_PAGES)


def test_readme_stays_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    assert not re.search(r"\(was [^)]*\)", "\n".join(lines)), "README carries '(was X)' history"


def test_readme_second_command_is_what_ci_runs():
    commands = README.read_text(encoding="utf-8").splitlines()[3:5]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install, _, run = commands[1].partition(" && ")
    assert install.replace("pip install", "pip install -q") in ci.replace("python3 -m ", "")
    assert run.replace("python ", "python3 ") in ci


@pytest.mark.slow  # every example, each compiling its optimizer
@pytest.mark.parametrize("path, block", list(_cases()))
def test_example_runs_alone(path, block):
    _run_alone(path, block)
