"""The routing report: every leaf's decision, suggested rules and warnings, never raising.

`routing_report` routes like `optorth.route` but records instead of raising: a
leaf with no unambiguous layout (rank 3, rank ≥ 5) or whose rule does not fit it gets the
target ``"unresolved"`` and a suggested rule fitting its shape and name
(`optorth.matrices._suggest`); a malformed rule or pattern becomes a warning. It also
warns about routings that run but are likely wrong:

* a rule that matches no leaf (a typo, or a path with another prefix);
* a likely output layer on the matrix path: a 2-D kernel routed by default whose outputs
  feed no other layer (its output size is no other leaf's input size) and are fewer than its
  inputs, or whose output size is an embedding's vocabulary. Muon's recipe trains the output
  layer with the fallback;
* an embedding or output-head leaf sent to the matrix path by a rule (a tied
  embedding/head then takes matrix steps as both);
* no leaf at all on the matrix path (the optimizer would be its fallback everywhere).

`describe_routing` prints it; the ready optimizers emit the warnings as
`RoutingWarning` when they are initialized.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, NamedTuple, Sequence

import optax

from optorth.matrices._paths import as_params_tree, flatten_with_paths
from optorth.matrices._routing import (
    BIAS_PATTERNS,
    EMBEDDING_PATTERNS,
    FALLBACK,
    HEAD_PATTERNS,
    UNRESOLVED,
    Decision,
    Rule,
    check_rules,
    compile_patterns,
    decide_all,
)
from optorth.matrices._specs import MatrixSpec
from optorth.matrices._suggest import Suggestion, fan_dims, suggest_rules


class RoutingWarning(UserWarning):
    """A routing that runs but is likely not what was meant (see `routing_report`)."""


class RoutingReport(NamedTuple):
    """Every leaf's `Decision`, rules for the unresolved ones, and warnings."""

    decisions: list[Decision]
    suggestions: list[Suggestion]
    warnings: list[str]


def _patterns(embedding_patterns, head_patterns, bias_patterns, problems):
    try:
        return compile_patterns(embedding_patterns, head_patterns, bias_patterns)
    except ValueError as err:
        problems.append(f"{err} The default patterns were used instead.")
        return compile_patterns(EMBEDDING_PATTERNS, HEAD_PATTERNS, BIAS_PATTERNS)


def _unused_rules(rules, decisions) -> list[str]:
    return [f"rule {pattern!r} matches no leaf: it routes nothing. Check the path spelling "
            f"(keys joined by '/', e.g. 'layers/0/mlp/kernel'; describe_routing lists them)."
            for regex, _, pattern in rules
            if not any(regex.search(d.path) for d in decisions)]


def _named(patterns, path) -> str | None:
    for comp in path.split("/"):
        if any(p.fullmatch(comp) for p in patterns):
            return comp
    return None


def _tied_on_matrix_path(decisions, embed, head) -> list[str]:
    out = []
    for d in decisions:
        if not isinstance(d.target, MatrixSpec):
            continue
        comp = _named(embed, d.path) or _named(head, d.path)
        if comp is not None:
            out.append(
                f"leaf {d.path!r} of shape {d.shape} is named like an embedding or output head "
                f"({comp!r}) but takes the matrix path ({d.reason}). A tied embedding is also "
                f"the output layer, and Muon's recipe trains both with the fallback; remove "
                f"the rule unless that is intended.")
    return out


def _likely_outputs(decisions, embed) -> list[str]:
    vocab = {d.shape[0] for d in decisions if len(d.shape) == 2 and _named(embed, d.path)}
    reads = [(fan_dims(d.shape), _named(embed, d.path) is not None) for d in decisions]
    out = []
    for i, d in enumerate(decisions):
        if not (isinstance(d.target, MatrixSpec) and not d.reason.startswith("rule")
                and len(d.shape) == 2):
            continue
        fan_in, fan_out = d.shape
        others = [r for j, r in enumerate(reads) if j != i]
        inputs = set().union(*(dims for dims, _ in others))
        hidden = set().union(*(dims for dims, embedding in others if not embedding))
        by_vocab = fan_out in vocab and fan_out not in hidden  # no hidden layer reads it
        if by_vocab or (fan_out < fan_in and fan_out not in inputs):
            why = (f"its {fan_out} outputs match an embedding's vocabulary" if by_vocab
                   else f"its {fan_out} outputs are the input size of no other leaf")
            out.append(
                f"leaf {d.path!r} of shape {d.shape} takes the matrix path but looks like the "
                f"output layer ({why}). Muon's recipe trains the output layer with the "
                f"fallback: add (r'^{re.escape(d.path)}$', 'fallback') to rules, or "
                f"(r'^{re.escape(d.path)}$', optorth.MatrixSpec()) to keep it on the matrix "
                f"path without this warning.")
    return out


def routing_report(
    params,
    rules: Sequence[Rule] | None = None,
    *,
    embedding_patterns: Sequence[str] = EMBEDDING_PATTERNS,
    head_patterns: Sequence[str] = HEAD_PATTERNS,
    bias_patterns: Sequence[str] = BIAS_PATTERNS,
) -> RoutingReport:
    """Every leaf's decision, rules for the leaves routing cannot decide, and warnings.

    Takes the same arguments as `optorth.route` and makes the same decisions, but never
    raises: see the module docstring for what it records.

    Returns:
      A `RoutingReport`; ``decisions`` in tree order, ``"unresolved"`` as the target
      of a leaf `optorth.route` would refuse.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"attn": {"q_proj": {"kernel": jnp.zeros((8, 2, 4))}},
      ...           "fc": {"kernel": jnp.zeros((8, 16))}, "cls": {"kernel": jnp.zeros((16, 3))}}
      >>> report = routing_report(params)
      >>> [d.target for d in report.decisions][0]
      'unresolved'
      >>> report.suggestions[0].rule_text()
      "(r'(^|/)q_proj/kernel$', optorth.MatrixSpec((-3,), (-2, -1)))"
      >>> report.warnings[0][:42]
      "leaf 'cls/kernel' of shape (16, 3) takes t"
    """
    problems: list[str] = []
    checked = check_rules(rules, problems)
    embed, head, bias = _patterns(embedding_patterns, head_patterns, bias_patterns, problems)
    try:
        items, _ = flatten_with_paths(as_params_tree(params))
    except Exception as err:  # noqa: BLE001 - a report of what went wrong, never a crash
        return RoutingReport([], [], [f"params could not be read as a pytree: {err}"])
    decisions = decide_all(items, checked, (embed, head, bias))
    unresolved = [(d.path, d.shape) for d in decisions if d.target == UNRESOLVED]
    suggestions = suggest_rules(unresolved, [d.path for d in decisions]) if unresolved else []
    found = problems + _unused_rules(checked, decisions)
    found += _likely_outputs(decisions, embed) + _tied_on_matrix_path(decisions, embed, head)
    if decisions and not any(isinstance(d.target, MatrixSpec) for d in decisions):
        found.append("no leaf takes the matrix path: the optimizer is its fallback for every "
                     "leaf. Add rules sending the hidden kernels to a MatrixSpec.")
    return RoutingReport(decisions, suggestions, found)


def _matrices_text(spec, shape) -> str:
    if not isinstance(spec, MatrixSpec):
        return ""
    return " + ".join(f"{b}×({m}×{n})" for b, m, n in spec.matrix_shapes(shape))


def _route_name(target) -> str:
    return "matrix" if isinstance(target, MatrixSpec) else str(target)


def _table(decisions) -> list[str]:
    header = ("path", "shape", "route", "spec", "matrices", "reason")
    rows = [header] + [
        (d.path, str(d.shape), _route_name(d.target),
         d.target.describe() if isinstance(d.target, MatrixSpec) else "",
         _matrices_text(d.target, d.shape), d.reason)
        for d in decisions
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def describe_routing(
    params,
    rules: Sequence[Rule] | None = None,
    *,
    embedding_patterns: Sequence[str] = EMBEDDING_PATTERNS,
    head_patterns: Sequence[str] = HEAD_PATTERNS,
    bias_patterns: Sequence[str] = BIAS_PATTERNS,
) -> str:
    """A printable report: every leaf's path, shape, route, spec, matrices and reason.

    Takes the same arguments as `optorth.route` and makes the same decisions, but never
    raises (`routing_report`): leaves route would refuse are listed as ``unresolved``
    with suggested rules to paste, followed by warnings (rules matching nothing, a likely
    output layer or a tied embedding on the matrix path, no matrix leaf at all). The last line
    counts the leaves of each route.

    For example:

        print(optorth.describe_routing(nnx.state(model, nnx.Param)))
    """
    report = routing_report(params, rules, embedding_patterns=embedding_patterns,
                            head_patterns=head_patterns, bias_patterns=bias_patterns)
    lines = _table(report.decisions)
    if report.suggestions:
        lines += ["", "suggested rules for the unresolved leaves (first match wins):",
                  "rules=["]
        lines += [f"    {s.rule_text()},  # {s.layout}: {len(s.paths)} "
                  f"{'leaf' if len(s.paths) == 1 else 'leaves'}" for s in report.suggestions]
        lines.append("]")
    if report.warnings:
        lines += ["", "warnings:"] + [f"- {w}" for w in report.warnings]
    counts = {}
    for d in report.decisions:
        counts[_route_name(d.target)] = counts.get(_route_name(d.target), 0) + 1
    summary = f"{counts.get('matrix', 0)} matrix leaves, {counts.get(FALLBACK, 0)} fallback leaves"
    if counts.get(UNRESOLVED):
        summary += f", {counts[UNRESOLVED]} unresolved leaves"
    lines.append(summary)
    return "\n".join(lines)


def warn_routing_at_init(who: str, tx: optax.GradientTransformation, rules: Any,
                         ) -> optax.GradientTransformation:
    """``tx`` whose ``init`` emits the report's warnings as `RoutingWarning`.

    Leaves ``tx.init``'s own errors alone: an unresolved leaf still raises there.
    """

    def init_fn(params):
        for message in routing_report(params, rules).warnings:
            warnings.warn(f"{who}: {message}", RoutingWarning, stacklevel=2)
        return tx.init(params)

    return optax.GradientTransformation(init_fn, tx.update)
