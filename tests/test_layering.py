"""The package's layers only look down, and its text cites papers, not internal notes.

Every module under ``optorth/`` is parsed with `ast` (imports inside functions included;
nothing is imported or executed) and the import graph between optorth modules is checked for:

* an import cycle between modules;
* an underscore-prefixed *name* imported from another module
  (``from optorth.ns._presets import _SHAPED``); public names from private files are fine, and a
  private *module* (``from optorth.ns import _fitted``) may be imported only within its own wing;
* an import that points up or sideways across wings, per `LAYERS`: a module may import
  its own wing and strictly lower layers (so ``ns`` and ``matrices`` never import each other);
* a comment or string citing internal notes ("REFERENCE §", "REFERENCE.md") or an issue number.

The checker is a plain function, `check_package`, so that ``test_checker_catches_*``
can run it on a synthetic package and show that it is not vacuous.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import pathlib
import re
import textwrap
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: The wing of each top-level entry of ``optorth/`` and its layer. ``__init__`` is the package's
#: own ``__init__.py`` (the public surface). A new top-level module or wing must be added here.
LAYERS: dict[str, int] = {
    "_checks": 0,
    "_distribution": 1,
    "_column_split": 1,
    "ns": 2,
    "matrices": 2,
    "nn": 2,
    "norms": 3,
    "blocks": 4,
    "optimizers": 5,
    "contrib": 5,
    "checkpoint": 6,
    "__init__": 7,
}

#: Text that must not appear in comments or strings: cite papers, not internal notes or issues.
FORBIDDEN_TEXT = re.compile(r"REFERENCE\s*§|REFERENCE\.md|\bissues?\s*#?\d+", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Violation:
    kind: str  # "cycle", "private-name", "private-module", "layer", "unknown-wing", "citation"
    file: str
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: [{self.kind}] {self.text}  -- {self.why}"


@dataclasses.dataclass(frozen=True)
class _Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    name: str | None  # the imported name when ``from target import name`` names no module
    file: str
    line: int
    text: str


def _module_names(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every ``.py`` file of ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(path: pathlib.Path) -> bool:
    return path.name == "__init__.py"


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _statement_text(lines: list[bytes], node: ast.stmt) -> str:
    """The source of ``node`` on one line, whitespace runs collapsed (what
    ``ast.get_source_segment`` gives, without splitting the whole file again for every node;
    column offsets count UTF-8 bytes)."""
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        text = lines[first][node.col_offset:node.end_col_offset]
    else:
        text = b"\n".join([lines[first][node.col_offset:], *lines[first + 1:last],
                           lines[last][:node.end_col_offset]])
    return " ".join(text.decode("utf-8").split())


def _imports(module: str, path: pathlib.Path, modules: dict, root: pathlib.Path, package: str):
    """Every import of an optorth module in ``path``, at any depth of the syntax tree."""
    source = path.read_text(encoding="utf-8")
    lines = source.encode("utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        text = _statement_text(lines, node)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    yield _Import(module, alias.name, None, rel, node.lineno, text)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = _resolve_relative(module, _is_package(path), node.level, node.module)
            else:
                target = node.module or ""
            if not (target == package or target.startswith(package + ".")):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:  # ``from pkg import submodule``
                    yield _Import(module, submodule, None, rel, node.lineno, text)
                else:
                    yield _Import(module, target, alias.name, rel, node.lineno, text)


def _wing(module: str, package: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _citations(path: pathlib.Path, rel: str):
    """Comments and string literals (docstrings included) that cite internal notes."""
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.STRING):
            continue
        for offset, line in enumerate(token.string.splitlines()):
            match = FORBIDDEN_TEXT.search(line)
            if match:
                yield Violation(
                    "citation", rel, token.start[0] + offset, line.strip(),
                    f"cites {match.group(0)!r}; cite the paper (title, arXiv id) instead")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or self-loops."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_package(
    root: pathlib.Path, package: str = "optorth", layers: dict[str, int] = LAYERS
) -> list[Violation]:
    """All layering and citation violations of ``root/package``, sorted by file and line."""
    root = pathlib.Path(root)
    modules = _module_names(root, package)
    found: list[Violation] = []
    imports: list[_Import] = []
    for module, path in modules.items():
        rel = path.relative_to(root).as_posix()
        found.extend(_citations(path, rel))
        wing = _wing(module, package)
        if wing not in layers:
            found.append(Violation(
                "unknown-wing", rel, 1, module,
                f"wing {wing!r} is not in the layer map {sorted(layers)}; add it to LAYERS "
                "in tests/test_layering.py at the layer it belongs to"))
        imports.extend(_imports(module, path, modules, root, package))

    graph: dict[str, set[str]] = {m: set() for m in modules}
    first_edge: dict[tuple[str, str], _Import] = {}
    for imp in imports:
        if imp.target in modules and imp.target != imp.source:
            graph[imp.source].add(imp.target)
            first_edge.setdefault((imp.source, imp.target), imp)
        src_wing, dst_wing = _wing(imp.source, package), _wing(imp.target, package)
        # (b) private names and private modules
        if imp.name is not None and _is_private(imp.name):
            found.append(Violation(
                "private-name", imp.file, imp.line, imp.text,
                f"imports the private name {imp.name!r} from {imp.target}; make it public in "
                "the lowest layer that needs it, or pass it in"))
        if imp.name is None and src_wing != dst_wing:
            private = [p for p in imp.target.split(".")[1:] if _is_private(p)]
            if private:
                found.append(Violation(
                    "private-module", imp.file, imp.line, imp.text,
                    f"imports the private module {imp.target} from wing {src_wing!r}; import "
                    "public names from it (from ... import name) or from its wing's package"))
        # (c) layers
        if src_wing in layers and dst_wing in layers and src_wing != dst_wing:
            if layers[dst_wing] >= layers[src_wing]:
                direction = "upward" if layers[dst_wing] > layers[src_wing] else "sideways"
                found.append(Violation(
                    "layer", imp.file, imp.line, imp.text,
                    f"{direction} import: {src_wing} (layer {layers[src_wing]}) -> {dst_wing} "
                    f"(layer {layers[dst_wing]}); a module imports its own wing and lower "
                    "layers only"))

    # (a) cycles: name every edge inside each strongly connected component
    for component in _cycles(graph):
        members = set(component)
        for source in component:
            for target in sorted(graph[source] & members):
                imp = first_edge[(source, target)]
                found.append(Violation(
                    "cycle", imp.file, imp.line, imp.text,
                    f"part of the import cycle among {', '.join(component)}"))
    return sorted(set(found), key=lambda v: (v.file, v.line, v.kind, v.text))


def _report(violations: list[Violation]) -> str:
    return f"{len(violations)} violation(s):\n" + "\n".join(f"  {v}" for v in violations)


# ----------------------------------------------------------------------------------- tests


def test_optorth_layers_look_down_and_cite_no_internal_notes():
    violations = check_package(ROOT)
    if violations:
        pytest.fail(_report(violations), pytrace=False)


def test_every_optorth_module_parses_and_is_seen():
    modules = _module_names(ROOT, "optorth")
    assert "optorth" in modules and "optorth.ns._engine" in modules
    assert len(modules) > 20


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_checker_catches_synthetic_violations(tmp_path):
    _write(tmp_path, {
        "optorth/__init__.py": "from optorth.blocks._a import a\n",
        "optorth/ns/__init__.py": '"""ns"""\n',
        "optorth/ns/_engine.py": '''\
            """The engine (see REFERENCE §2)."""
            from optorth.ns._presets import table
            _PRIVATE = 1
            def run():
                from optorth.blocks._a import a  # upward, inside a function
                return a
            ''',
        "optorth/ns/_presets.py": "from optorth.ns._engine import run as table  # issue 7\n",
        "optorth/matrices/__init__.py": "",
        "optorth/matrices/_m.py": "from optorth.ns import _engine\n",
        "optorth/blocks/__init__.py": "",
        "optorth/blocks/_a.py": '''\
            from optorth.ns._engine import _PRIVATE
            from . import _b
            a = _PRIVATE
            ''',
        "optorth/blocks/_b.py": "from optorth.ns import _presets\n"
                                "from optorth.ns._presets import table\n",
        "optorth/extra.py": "",
    })
    found = {(v.kind, v.file, v.line) for v in check_package(tmp_path)}
    expected = {
        ("citation", "optorth/ns/_engine.py", 1),
        ("citation", "optorth/ns/_presets.py", 1),
        ("cycle", "optorth/ns/_engine.py", 2),
        ("cycle", "optorth/ns/_presets.py", 1),
        ("layer", "optorth/ns/_engine.py", 5),  # ns -> blocks, upward
        ("cycle", "optorth/ns/_engine.py", 5),  # ... which also closes engine -> a -> engine
        ("cycle", "optorth/blocks/_a.py", 1),
        ("cycle", "optorth/blocks/_a.py", 2),  # a -> b -> presets -> engine -> a
        ("cycle", "optorth/blocks/_b.py", 1),
        ("private-name", "optorth/blocks/_a.py", 1),
        ("layer", "optorth/matrices/_m.py", 1),  # matrices -> ns, sideways
        ("private-module", "optorth/matrices/_m.py", 1),
        ("private-module", "optorth/blocks/_b.py", 1),  # private module from another wing
        ("unknown-wing", "optorth/extra.py", 1),
    }
    assert found == expected, sorted(found ^ expected)
    # Relative imports of a private module within the wing, public names from private files,
    # and the public surface importing every wing are all allowed.
    assert not any(v.file == "optorth/__init__.py" for v in check_package(tmp_path))
    assert ("private-module", "optorth/blocks/_a.py", 2) not in found
    assert ("private-name", "optorth/blocks/_b.py", 2) not in found


def test_clean_synthetic_package_passes(tmp_path):
    _write(tmp_path, {
        "optorth/__init__.py": "from optorth.optimizers._o import o\nfrom optorth import ns\n",
        "optorth/_checks.py": "def positive(x):\n    return x\n",
        "optorth/ns/__init__.py": "",
        "optorth/ns/_engine.py": "from optorth._checks import positive\nfrom . import _presets\n",
        "optorth/ns/_presets.py": '"""Coefficients (Jordan 2024, arXiv:2409.20325)."""\n',
        "optorth/matrices/__init__.py": "",
        "optorth/matrices/_specs.py": "from optorth._checks import positive\n",
        "optorth/blocks/__init__.py": "",
        "optorth/blocks/_b.py": "from optorth.ns._engine import positive\n"
                                "from optorth.matrices._specs import positive as p\n",
        "optorth/optimizers/__init__.py": "",
        "optorth/optimizers/_o.py": "from optorth.blocks._b import positive as o\n",
    })
    assert check_package(tmp_path) == []
