"""Griffe extension for two Google-docstring habits of this project that griffe does not parse.

* ``Example:`` (singular) starts an examples section, like ``Examples:``; otherwise the
  ``>>>`` lines render as prose.
* In ``Args:``, ``a, b: text`` documents both ``a`` and ``b`` with the same text; otherwise
  griffe reports a parameter named ``"a, b"`` that the signature lacks.

Everything else griffe checks stays strict: a documented parameter that is not in the
signature still fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import re

import griffe

_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s*$")
_JOINED = re.compile(r"^(\s+)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)+)(\s*(?:\([^)]*\))?:\s.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rewrite(text: str) -> str:
    """The docstring ``text`` with ``Example:`` and joined parameter entries expanded."""
    lines = re.sub(r"(?m)^(\s*)Example:\s*$", r"\1Examples:", text).split("\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        header = _HEADER.match(line)
        out.append(line)
        i += 1
        if not header:
            continue
        base = len(header.group(1))
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            entry = [lines[i]]
            i += 1
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > _indent(entry[0]):
                entry.append(lines[i])
                i += 1
            joined = _JOINED.match(entry[0])
            if not joined:
                out.extend(entry)
                continue
            indent, names, rest = joined.groups()
            for name in (n.strip() for n in names.split(",")):
                out.extend([f"{indent}{name}{rest}"] + entry[1:])
    return "\n".join(out)


class GoogleSections(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        """The top-level package, which ``on_object`` never sees."""
        self.on_object(obj=pkg)
