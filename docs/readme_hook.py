"""MkDocs hook: the home page is the repository's README, with its links made relative to docs/.

The README links the docs pages as ``docs/page.md`` (right on a repository host); on the home
page, which lives in ``docs/``, the same pages are ``page.md``. ``docs/index.md`` holds only the
marker line below, replaced here by the README so the strict build checks its links.
"""

from __future__ import annotations

import pathlib
import re

MARKER = "<!-- the README -->"
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_for_docs() -> str:
    """The README's Markdown with ``](docs/...)`` links rewritten relative to ``docs/``."""
    return re.sub(r"\]\(docs/", "](", README.read_text(encoding="utf-8"))


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, readme_for_docs()) if MARKER in markdown else markdown
