"""The built docs render for a reader: `mkdocs build --strict`, then the HTML is checked for
what a strict build lets through: literal Sphinx roles, reStructuredText `=====` table rules,
`$...$` math that MathJax will not typeset, and notebook pages without their outputs."""

from __future__ import annotations

import html
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|ref|doc|term):`?")
RST_RULE = re.compile(r"={5,}")
RAW_MATH = re.compile(r"(?<![\w$\\])\$[^\s$][^$\n]*?\$(?![\w$])")
SCRIPTS_AND_STYLES = re.compile(r"<(script|style)\b[^>]*>.*?</\1>", re.S | re.I)
CODE = re.compile(r"<(pre|code)\b[^>]*>.*?</\1>", re.S | re.I)
ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">.*?</\1>', re.S)
UNRUN_CELL = "In [ ]:"
MATHJAX_SOURCE = re.compile(r'<script src="[^"]*mathjax@3[^"]*"')
MATHJAX_CONFIG = re.compile(r'<script src="[^"]*javascripts/mathjax\.js"')
PLOT = re.compile(r'<img\b[^>]*\bsrc="data:image/(?:png|svg)')


def _visible(page: str) -> str:
    """The page without the CSS and JavaScript it embeds (notebook pages carry both)."""
    return SCRIPTS_AND_STYLES.sub("", page)


def _is_notebook(page: str) -> bool:
    return 'class="jp-Notebook' in page


def page_problems(name: str, page: str) -> list[str]:
    """What in one built HTML page a reader would see broken, one line per problem."""
    problems = []
    visible = _visible(page)
    for pattern, what in ((SPHINX_ROLE, "a literal Sphinx role"),
                          (RST_RULE, "a reStructuredText '=====' rule")):
        for match in pattern.finditer(visible):
            context = html.unescape(visible[max(0, match.start() - 60):match.end() + 40])
            problems.append(f"{name}: {what}: ...{' '.join(context.split())}...")
    prose = CODE.sub("", ARITHMATEX.sub("", visible))
    has_math = 'class="arithmatex"' in visible or (_is_notebook(page) and RAW_MATH.search(prose))
    if not _is_notebook(page):
        problems += [f"{name}: raw math outside arithmatex: {m.group(0)!r}"
                     for m in RAW_MATH.finditer(prose)]
    if has_math and not (MATHJAX_CONFIG.search(page) and MATHJAX_SOURCE.search(page)):
        problems.append(f"{name}: has math but does not load the MathJax config and MathJax 3")
    if _is_notebook(page):
        if UNRUN_CELL in html.unescape(visible).replace("\xa0", " "):
            problems.append(f"{name}: a notebook code cell was never run (prompt 'In [ ]:')")
        if "jp-OutputArea-output" not in visible:
            problems.append(f"{name}: a notebook page without any cell output")
        if not PLOT.search(visible):
            problems.append(f"{name}: a notebook page without any plot")
    return problems


def site_problems(site: pathlib.Path) -> list[str]:
    """`page_problems` of every HTML page under ``site``."""
    problems = []
    for path in sorted(site.rglob("*.html")):
        problems += page_problems(str(path.relative_to(site)), path.read_text(encoding="utf-8"))
    return problems


def test_checker_finds_each_problem():
    assert page_problems("p", "<p>see :func:<code>optorth.muon</code></p>")
    assert page_problems("p", "<p>see :class:`optorth.Schedule`</p>")
    assert page_problems("p", "<p>==================  =======</p>")
    assert page_problems("p", r"<p>a step maps $\sigma$ to $a\sigma$</p>")
    notebook = '<div class="jp-Notebook"><div class="jp-InputPrompt">In&nbsp;[&nbsp;]:</div></div>'
    found = "\n".join(page_problems("nb", notebook))
    assert "never run" in found and "without any cell output" in found and "plot" in found


def test_checker_accepts_what_renders():
    config = ('<script src="../javascripts/mathjax.js"></script>'
              '<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>')
    assert not page_problems("p", '<p>rule <code>kernel$</code>, <code>x$ and $y</code></p>')
    assert not page_problems("p", '<p>a <span class="arithmatex">\\(\\sigma\\)</span></p>'
                             + config)
    assert page_problems("p", '<p>a <span class="arithmatex">\\(\\sigma\\)</span></p>')
    notebook = ('<div class="jp-Notebook"><p>maps $\\sigma$</p><div class="jp-InputPrompt">'
                'In&nbsp;[1]:</div><div class="jp-OutputArea-output">'
                '<img alt="" class="" src="data:image/png;base64,AAAA"/></div></div>')
    assert not page_problems("nb", notebook + config)
    assert "MathJax" in "\n".join(page_problems("nb", notebook))


@pytest.mark.slow  # a full docs build, about 10 s
def test_built_docs_render(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 20, f"only {len(pages)} pages built"
    notebooks = [p for p in pages if _is_notebook(p.read_text(encoding="utf-8"))]
    assert len(notebooks) == len(list((ROOT / "notebooks").glob("*.ipynb")))
    problems = site_problems(site)
    assert not problems, "\n".join(problems[:40])
