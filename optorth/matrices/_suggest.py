"""Suggested routing rules for leaves with no unambiguous matrix layout (rank 3, rank ≥ 5).

A rank-3 leaf may be a stack of dense kernels ``(L, in, out)``, a conv1d kernel
``(k, cin, cout)`` or a multi-head attention kernel: Flax ``DenseGeneral`` / NNX
``MultiHeadAttention`` keep query/key/value as ``(d, heads, head_dim)`` and the output
projection as ``(heads, head_dim, d)``. The layout is guessed from the module name (``q``,
``k_proj``, ``query``, ``qkv``, ``out``, ``o_proj``, ``attn_out_proj``, ...) and checked against
the shape (``d = heads·head_dim``), and leaves that get the same layout and share their last
path component are covered by one regular expression (``(^|/)(q_proj|k_proj)/kernel$``), so
one pasted rule resolves all of them. The suggestion is only a suggestion: routing never
guesses a rank-3 layout itself.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from optorth.matrices._specs import MatrixSpec

#: Module names of query/key/value projections (``(d, heads, head_dim)`` kernels).
QKV_NAME = re.compile(r"(.*[_-])?(q|k|v|qk|kv|qkv|query|key|value|wq|wk|wv|wqkv)"
                      r"([_-]?(proj|projection|dense|linear|kernel))?", re.IGNORECASE)
#: Module names of attention output projections (``(heads, head_dim, d)`` kernels).
OUT_NAME = re.compile(r"(.*[_-])?(o|out|wo|output|attn_out|proj_out|out_proj|o_proj|c_proj)"
                      r"([_-]?(proj|projection|dense|linear))?", re.IGNORECASE)
#: Module names of scanned / stacked layers.
STACK_NAME = re.compile(r".*(layers|blocks|scan|stack|stacked|repeat|experts).*", re.IGNORECASE)
_PARAM_NAMES = {"kernel", "w", "weight", "weights", "value", "embedding"}

QKV_LAYOUT = MatrixSpec((-3,), (-2, -1))
OUT_LAYOUT = MatrixSpec((-3, -2), (-1,))


class Suggestion(NamedTuple):
    """A rule that resolves ``paths``: ``(pattern, spec)``, and what the layout was read as."""

    pattern: str
    spec: MatrixSpec
    layout: str
    paths: tuple[str, ...]

    def rule_text(self) -> str:
        """The rule as Python source, e.g. ``(r'^k$', optorth.MatrixSpec.stacked())``."""
        return f"(r'{self.pattern}', {spec_source(self.spec)})"


def spec_source(spec: MatrixSpec) -> str:
    """Python source that builds ``spec`` (its named constructor where there is one)."""
    if spec == MatrixSpec.stacked():
        return "optorth.MatrixSpec.stacked()"
    for dims in range(1, 4):
        if spec == MatrixSpec.conv(spatial_dims=dims):
            return f"optorth.MatrixSpec.conv(spatial_dims={dims})"
    return f"optorth.MatrixSpec({spec.reduction}, {spec.output})"


def _module_name(path: str) -> str:
    """The name of the module owning a ``.../<module>/kernel`` leaf ("" for a bare leaf)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[-1].lower() not in _PARAM_NAMES:
        return ""
    while len(parts) > 1 and parts[-1].lower() in _PARAM_NAMES:
        parts.pop()
    return parts[-1]


def guess_layout(path: str, shape: tuple[int, ...]) -> tuple[MatrixSpec, str]:
    """``(spec, description)``: the layout a rank ≥ 3 leaf most likely has."""
    if len(shape) != 3:
        spatial = len(shape) - 2
        return MatrixSpec.conv(spatial_dims=spatial), f"conv kernel with {spatial} spatial dims"
    name = _module_name(path)
    a, b, c = shape
    qkv_shape, out_shape = a == b * c, c == a * b
    if QKV_NAME.fullmatch(name) and not out_shape:
        return QKV_LAYOUT, "attention q/k/v projection (d, heads, head_dim)"
    if OUT_NAME.fullmatch(name) and not qkv_shape:
        return OUT_LAYOUT, "attention output projection (heads, head_dim, d)"
    if STACK_NAME.fullmatch(path):
        return MatrixSpec.stacked(), "stacked layers (L, in, out)"
    if qkv_shape:
        return QKV_LAYOUT, "attention q/k/v projection (d, heads, head_dim)"
    if out_shape:
        return OUT_LAYOUT, "attention output projection (heads, head_dim, d)"
    if a <= 7 < min(b, c):
        return MatrixSpec.conv(spatial_dims=1), "conv1d kernel (k, cin, cout)"
    return MatrixSpec.stacked(), "stacked layers (L, in, out)"


def _pattern(paths: list[str]) -> str:
    if len(paths) == 1 and "/" not in paths[0]:
        return f"^{re.escape(paths[0])}$"
    tails = sorted({"/".join(p.split("/")[-2:]) for p in paths})
    lasts = {t.split("/")[-1] for t in tails}
    if len(lasts) == 1 and all("/" in t for t in tails):
        heads = sorted({t.split("/")[0] for t in tails})
        names = heads[0] if len(heads) == 1 else "(" + "|".join(map(re.escape, heads)) + ")"
        if len(heads) == 1:
            names = re.escape(names)
        return f"(^|/){names}/{re.escape(lasts.pop())}$"
    return "^(" + "|".join(re.escape(p) for p in paths) + ")$"


def suggest_rules(ambiguous, all_paths) -> list[Suggestion]:
    """One rule per guessed layout for ``ambiguous`` ``(path, shape)`` pairs.

    A grouped pattern is used only if it matches exactly its own leaves among ``all_paths``;
    otherwise the rule lists the full paths.
    """
    groups: dict[tuple, list[str]] = {}
    for path, shape in ambiguous:
        spec, layout = guess_layout(path, tuple(shape))
        groups.setdefault((spec, layout, path.split("/")[-1]), []).append(path)
    suggestions = []
    for (spec, layout, _), paths in groups.items():
        pattern = _pattern(paths)
        if {p for p in all_paths if re.search(pattern, p)} != set(paths):
            pattern = "^(" + "|".join(re.escape(p) for p in paths) + ")$"
        suggestions.append(Suggestion(pattern, spec, layout, tuple(paths)))
    return suggestions


def ambiguity_error(ambiguous, all_paths) -> ValueError:
    """The error for leaves with no unambiguous layout: every such leaf, and rules to paste."""
    rules = suggest_rules(ambiguous, all_paths)
    noun = "Leaf" if len(ambiguous) == 1 else "Leaves"
    listed = "; ".join(f"{p!r} of shape {tuple(s)} (rank {len(s)})" for p, s in ambiguous[:8])
    more = f" and {len(ambiguous) - 8} more" if len(ambiguous) > 8 else ""
    suggested = ", ".join(r.rule_text() for r in rules)
    guesses = "; ".join(f"{r.layout}: {', '.join(r.paths[:3])}" for r in rules)
    first, verb = ambiguous[0], "has" if len(ambiguous) == 1 else "have"
    return ValueError(
        f"{noun} {listed}{more} {verb} no unambiguous matrix layout: it could be stacked/scanned "
        f"layers, a conv kernel or a multi-head projection. Add rules, first match wins; "
        f"from the names and shapes ({guesses}): rules=[{suggested}]. Other layouts: "
        f"optorth.MatrixSpec.stacked() for (L, in, out) layers, "
        f"optorth.MatrixSpec.conv(spatial_dims={len(first[1]) - 2}) for a conv kernel, "
        f"rules=optorth.nnx_attention_rules() for nnx.MultiHeadAttention, or "
        f"(r'^{re.escape(first[0])}$', 'fallback') to use the fallback optimizer. "
        f"optorth.describe_routing(params) lists every leaf."
    )


def fan_dims(shape) -> set[int]:
    """Sizes a leaf may read as its input: first and second-to-last axes, their product."""
    if len(shape) < 2:
        return set()
    return {shape[0], shape[-2], math.prod(shape[:-1])}
