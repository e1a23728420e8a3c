"""Routing: which leaves take the matrix path (and how), which take the fallback optimizer.

Decided from roles, not rank alone, in this order (the first that applies wins):

1. user ``rules``: ``(pattern, MatrixSpec | "fallback")`` pairs; ``pattern`` is a Python
   regular expression (a string or a compiled ``re.Pattern``) searched (``re.search``) in
   the leaf path, e.g. ``"layers/0/attn/kernel"`` (keys joined by ``/``; NNX variables are
   leaves, so no ``/value`` suffix). Anchor with ``^``/``$`` or ``(^|/)name(/|$)`` for exact
   components;
2. scalars and vectors (rank ≤ 1) and non-float leaves (integer, complex) → fallback;
3. a last path component matching ``bias_patterns`` (``bias``, ``scale``, ...) → fallback, so
   2-D biases such as NNX attention biases ``(heads, head_dim)`` are not taken for matrices;
   likewise a last component matching `ADAPTER_PATTERNS` (``oft_*``, ``hra_*``,
   ``givens_*``, ``lora_*``: the parameters of `optorth.nn`'s orthogonal fine-tuning
   adapters and of ``nnx.LoRA``). Those are coordinates of a transform (packed skew-symmetric
   generators, rotation angles, reflection directions, low-rank factors), not linear maps
   whose operator norm a matrix step controls, so they take the elementwise fallback as the
   adapter papers train them (with AdamW);
4. a path component matching ``embedding_patterns`` or ``head_patterns`` → fallback
   (embeddings and output heads; Muon reference practice);
5. rank 2 → ``MatrixSpec()`` (a hidden dense kernel ``(in, out)``);
6. rank 4 → ``MatrixSpec.conv()`` (a Flax conv kernel ``(kh, kw, cin, cout)``, fan-in
   ``kh·kw·cin``);
7. anything else (rank 3: stacked layers or conv1d or attention; rank ≥ 5) → ``ValueError``
   naming every such leaf and rules that would resolve them (guessed from the names and
   shapes, e.g. ``DenseGeneral`` attention kernels). Never a silent choice.

Component patterns are regular expressions matched in full against a single path component,
case-insensitively. They err towards the fallback: e.g. a Hugging Face BERT leaf
``attention/output/dense/kernel`` matches ``output`` and goes to AdamW; add a rule (rules win)
or pass ``head_patterns=`` to change that. `describe_routing` prints the decision and the
reason for each leaf, and never raises (`optorth.matrices._report`).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from optorth.matrices._paths import as_params_tree, dtype_of, flatten_with_paths, shape_of
from optorth.matrices._specs import MatrixSpec
from optorth.matrices._suggest import ambiguity_error

FALLBACK = "fallback"
#: The target of a leaf the report could not route (no layout, or a rule that does not fit).
UNRESOLVED = "unresolved"
Rule = tuple[str, Any]  # (regex, MatrixSpec | "fallback")

EMBEDDING_PATTERNS: tuple[str, ...] = (r".*embed.*", r"wte", r"wpe")
HEAD_PATTERNS: tuple[str, ...] = (
    r"lm_head", r"head", r"output", r"logits", r"classifier", r"readout",
)
BIAS_PATTERNS: tuple[str, ...] = (r"bias", r"biases", r"b", r"scale", r"gain", r"gamma",
                                  r"beta")
#: Last path components of adapter parameters (orthogonal fine-tuning, low rank): fallback.
ADAPTER_PATTERNS: tuple[str, ...] = (r"(oft|hra|givens|lora)_.*",)
_ADAPTERS = [re.compile(pattern, re.IGNORECASE) for pattern in ADAPTER_PATTERNS]


class Decision(NamedTuple):
    """One leaf's routing: its path, shape, target (spec or ``"fallback"``) and why."""

    path: str
    shape: tuple[int, ...]
    target: Any
    reason: str


def nnx_attention_rules(per_head: bool = False) -> list[Rule]:
    """Rules for Flax NNX ``MultiHeadAttention`` kernels (``query``/``key``/``value``/``out``).

    ``query``/``key``/``value`` kernels are ``(in, heads, head_dim)`` and ``out`` kernels
    ``(heads, head_dim, out)``. Axes count from the end, so scanned stacks
    ``(L, in, heads, head_dim)`` are handled too (``L`` becomes a batch axis).

    Args:
      per_head: ``False`` orthogonalizes each projection as one ``d × (heads·head_dim)``
        matrix (Muon reference practice for a fused projection); ``True`` orthogonalizes
        each head on its own.
    """
    if per_head:
        qkv, out = MatrixSpec((-3,), (-1,)), MatrixSpec((-2,), (-1,))
    else:
        qkv, out = MatrixSpec((-3,), (-2, -1)), MatrixSpec((-3, -2), (-1,))
    return [(r"(^|/)(query|key|value)/kernel$", qkv), (r"(^|/)out/kernel$", out)]


def _regex(pattern: str, flags: int, what: str) -> re.Pattern:
    try:
        return re.compile(pattern, flags)
    except re.error as err:
        raise ValueError(f"{what}: {pattern!r} is not a valid regular expression ({err}). "
                         f"Escape special characters with re.escape(...) or a raw string "
                         f"such as r'^layers/0/kernel$'.") from None


def _compile(patterns, name: str) -> list[re.Pattern]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{name}={patterns!r}: expected a sequence of regular expressions "
                         f"(strings), e.g. {name}=(r'lm_head', r'head').")
    return [_regex(p, re.IGNORECASE, f"{name}[{i}]") for i, p in enumerate(patterns)]


def _component_match(patterns, components) -> str | None:
    for comp in components:
        for pat in patterns:
            if pat.fullmatch(comp):
                return comp
    return None


def check_matrix_leaf(spec: MatrixSpec, path: str, shape, dtype) -> None:
    """Raises ``ValueError`` (naming the leaf and a fix) unless ``spec`` fits ``shape`` and the
    leaf is a real floating-point array: the matrix path is defined for real matrices only."""
    spec.check(shape, path)
    if dtype is None or jnp.issubdtype(dtype, jnp.floating):
        return
    if jnp.issubdtype(dtype, jnp.complexfloating):
        kind, fix = "complex", "Split it into real and imaginary parts"
    else:
        kind, fix = "not floating-point", "Keep integer and boolean leaves out of the optimizer"
    raise ValueError(
        f"Leaf {path!r} of shape {tuple(shape)} and dtype {dtype} is {kind}, but {spec!r} sends "
        f"it to the matrix path, which is defined for real floating-point matrices only. "
        f"{fix}, or send it to the fallback with rules=[(r'^{re.escape(path)}$', 'fallback')]."
    )


def check_rules(rules, problems: list[str] | None = None) -> list[tuple[re.Pattern, Any, str]]:
    """``[(compiled regex, target, pattern text)]``; raises ``ValueError`` for a malformed
    rule, or, given a ``problems`` list, records its message there and skips the rule."""
    if problems is None:
        return _check_rules(rules)
    try:
        return _check_rules(rules)
    except ValueError as err:
        whole = str(err)
    if not isinstance(rules, (list, tuple)) or (
            isinstance(rules, tuple) and len(rules) == 2 and isinstance(rules[0], str)):
        problems.append(whole)
        return []
    checked = []
    for i, rule in enumerate(rules):  # the good rules, and the message of each bad one
        try:
            ((regex, target, _),) = _check_rules([rule])
        except ValueError as err:
            problems.append(str(err).replace("rules[0]", f"rules[{i}]", 1))
            continue
        checked.append((regex, target, regex.pattern))
    return checked


def _check_rules(rules) -> list[tuple[re.Pattern, Any, str]]:
    if isinstance(rules, dict):
        raise ValueError(f"rules={rules!r}: expected a list of (regex, target) pairs; for a "
                         f"dict pass rules=list(rules.items()).")
    if isinstance(rules, (str, MatrixSpec)) or not isinstance(rules, (list, tuple, type(None))) or (
            isinstance(rules, tuple) and len(rules) == 2 and isinstance(rules[0], str)):
        raise ValueError(f"rules={rules!r}: expected a list of (regex, target) pairs, e.g. "
                         f"rules=[(r'^layers/kernel$', optorth.MatrixSpec.stacked())].")
    checked = []
    for i, rule in enumerate(rules or ()):
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2
                and isinstance(rule[0], (str, re.Pattern))):
            raise ValueError(f"rules[{i}] = {rule!r}: each rule is a (regex, target) pair, "
                             f"target a MatrixSpec or 'fallback'.")
        pattern, target = rule
        if not (isinstance(target, MatrixSpec) or target == FALLBACK):
            raise ValueError(f"rules[{i}] = {rule!r}: target must be an optorth.MatrixSpec or "
                             f"'fallback', got {target!r}.")
        if isinstance(pattern, re.Pattern):  # compiled: searched with its own flags
            checked.append((pattern, target, pattern.pattern))
        else:
            checked.append((_regex(pattern, 0, f"rules[{i}] = {rule!r}"), target, pattern))
    return checked


def _decide(path, leaf, rules, embed, head, bias, strict=True) -> Decision:
    shape = shape_of(leaf)
    for regex, target, pattern in rules:
        if regex.search(path):
            if isinstance(target, MatrixSpec):
                try:
                    check_matrix_leaf(target, path, shape, dtype_of(leaf))
                except ValueError as err:
                    if strict:
                        raise
                    return Decision(path, shape, UNRESOLVED, f"rule {pattern!r}: {err}")
            return Decision(path, shape, target, f"rule {pattern!r}")
    dtype = dtype_of(leaf)
    if len(shape) <= 1:
        return Decision(path, shape, FALLBACK, f"rank {len(shape)}")
    if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):  # ints, complex
        return Decision(path, shape, FALLBACK, f"dtype {dtype}")
    components = path.split("/") if path else []
    if components and _component_match(bias, components[-1:]):
        return Decision(path, shape, FALLBACK, f"bias/gain name {components[-1]!r}")
    if components and _component_match(_ADAPTERS, components[-1:]):
        return Decision(path, shape, FALLBACK, f"adapter parameter {components[-1]!r}")
    for patterns, role in ((embed, "embedding"), (head, "output head")):
        comp = _component_match(patterns, components)
        if comp is not None:
            return Decision(path, shape, FALLBACK, f"{role} name {comp!r}")
    if len(shape) == 2:
        return Decision(path, shape, MatrixSpec(), "hidden 2-D kernel")
    if len(shape) == 4:
        return Decision(path, shape, MatrixSpec.conv(), "4-D conv kernel (kh, kw, cin, cout)")
    return Decision(path, shape, UNRESOLVED, f"rank {len(shape)}: no unambiguous layout")


def routing_decisions(
    params,
    rules: Sequence[Rule] | None = None,
    *,
    embedding_patterns: Sequence[str] = EMBEDDING_PATTERNS,
    head_patterns: Sequence[str] = HEAD_PATTERNS,
    bias_patterns: Sequence[str] = BIAS_PATTERNS,
) -> tuple[list[Decision], Any]:
    """The `Decision` of every leaf (in tree order) and the tree definition.

    Raises:
      ValueError: for a malformed rule or pattern, a rule whose spec does not fit its leaf,
        or leaves with no unambiguous layout (all of them named, with suggested rules).
    """
    checked = check_rules(rules)
    patterns = compile_patterns(embedding_patterns, head_patterns, bias_patterns)
    items, treedef = flatten_with_paths(as_params_tree(params))
    decisions = [_decide(path, leaf, checked, *patterns) for path, leaf in items]
    ambiguous = [(d.path, d.shape) for d in decisions if d.target == UNRESOLVED]
    if ambiguous:
        raise ambiguity_error(ambiguous, [d.path for d in decisions])
    return decisions, treedef


def compile_patterns(embedding_patterns, head_patterns, bias_patterns) -> list[list]:
    """The compiled ``[embedding, head, bias]`` component patterns (``ValueError`` if bad)."""
    return [_compile(embedding_patterns, "embedding_patterns"),
            _compile(head_patterns, "head_patterns"), _compile(bias_patterns, "bias_patterns")]


def decide_all(items, rules, patterns) -> list[Decision]:
    """Every leaf's `Decision` without raising: a leaf that cannot be routed gets the
    target ``"unresolved"`` and the reason (for `describe_routing`)."""
    return [_decide(path, leaf, rules, *patterns, strict=False) for path, leaf in items]


def route(
    params,
    rules: Sequence[Rule] | None = None,
    *,
    embedding_patterns: Sequence[str] = EMBEDDING_PATTERNS,
    head_patterns: Sequence[str] = HEAD_PATTERNS,
    bias_patterns: Sequence[str] = BIAS_PATTERNS,
):
    """A tree like ``params`` whose leaves are a `MatrixSpec` or ``"fallback"``.

    Works on plain arrays, ``jax.ShapeDtypeStruct`` leaves, an ``nnx.State`` of ``nnx.Param``
    variables (as ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` passes to ``tx.init``) and on an
    ``nnx.Module`` (its ``nnx.Param`` state). See the module docstring for the order of the
    decisions.

    Args:
      params: the parameter pytree (only shapes, dtypes and paths are read).
      rules: ``(regex, MatrixSpec | "fallback")`` pairs searched in the ``/``-joined path;
        the first match wins and overrides every default.
      embedding_patterns: regexes matched against whole path components (case-insensitive);
        a match sends the leaf to the fallback path.
      head_patterns: likewise, for output heads.
      bias_patterns: likewise, against the last component only (biases, norm gains).

    Returns:
      A pytree with ``params``' structure (NNX variables replaced by their decision).

    Raises:
      ValueError: for a leaf with no unambiguous layout (naming its path, shape and the rule
        that resolves it), a malformed rule, or a rule whose spec does not fit its leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"embed": jnp.zeros((10, 4)), "w": jnp.zeros((4, 8)), "b": jnp.zeros(8)}
      >>> route(params)["w"]
      MatrixSpec(reduction=(0,), output=(1,), heads=None, blocks=None)
    """
    decisions, treedef = routing_decisions(
        params, rules, embedding_patterns=embedding_patterns, head_patterns=head_patterns,
        bias_patterns=bias_patterns)
    return jax.tree_util.tree_unflatten(treedef, [d.target for d in decisions])


def route_or_fallback(params, rules: Sequence[Rule] | None = None):
    """`route`, except that a leaf with no unambiguous layout (rank 3, rank ≥ 5) takes
    ``"fallback"`` instead of raising: for blocks whose fallback treats a rank ≥ 2 leaf as a
    batch of matrices over its last two axes (Adafactor's convention). Rules still win, and a
    rule whose spec does not fit its leaf still raises."""
    checked = check_rules(rules)
    patterns = compile_patterns(EMBEDDING_PATTERNS, HEAD_PATTERNS, BIAS_PATTERNS)
    items, treedef = flatten_with_paths(as_params_tree(params))
    targets = [_decide(path, leaf, checked, *patterns).target for path, leaf in items]
    return jax.tree_util.tree_unflatten(
        treedef, [FALLBACK if t == UNRESOLVED else t for t in targets])
