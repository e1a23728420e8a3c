"""The public surface a reader holds in mind: a short ``__all__``, ready optimizers with at most
12 documented parameters, one name per concept, and the README argument table as the contract.

The README holds a Markdown table between ``<!-- argument-table:start -->`` and
``<!-- argument-table:end -->`` with the columns ``| name | meaning | where it applies |``;
"where it applies" lists ready optimizers (``muon, turbo_muon``) or says ``all``. For every
ready optimizer, its parameters must be exactly the rows that apply to it.

Beyond the ready optimizers, every function and class in the ``__all__`` of optorth and its
public submodules is held to the same naming rules: no retired spelling, ``learning_rate`` an
``optax.ScalarOrSchedule``, and ``beta`` / ``rules`` / ``specs`` one meaning each.
"""

import inspect
import pathlib
import re

import pytest

import optorth

READY = optorth.optimizers.READY
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
#: Spellings the 1.0 surface retired in favour of one name per concept (the replacement in the
#: comment); no ready optimizer may take them.
FORBIDDEN = {
    "b2",  # beta2
    "ns_dtype",  # ns=NewtonSchulz(dtype=...)
    "epsilon1",  # eps
    "epsilon2",  # min_scale
    "second_moment_eps",  # eps
    "momentum_convention",  # the optimizer's own convention (scale_by_momentum(convention=))
    "rms_factor",  # scale=ShapeScale(..., rms=)
    "specs",  # rules
    "momentum",  # beta
    "schedule", "steps", "precondition", "method", "learn",  # ns=NewtonSchulz(...)
}
MAX_PARAMETERS = 12


def _signature(name):
    return inspect.signature(getattr(optorth.optimizers, name))


def _documented_args(func) -> set[str]:
    """The names of the ``Args:`` section of ``func``'s own docstring (Google style)."""
    lines = inspect.getdoc(func).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return set()
    indent = len(lines[start]) - len(lines[start].lstrip())
    names, entry_indent = set(), None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            break  # the next section (Returns:, Example:, ...)
        entry_indent = depth if entry_indent is None else entry_indent
        match = re.match(r"(\w+)( \([^)]*\))?:", line.strip())
        if depth == entry_indent and match:  # deeper lines continue an entry
            names.add(match.group(1))
    return names


#: The cap on ``optorth.__all__``: twelve ready optimizers, their configuration objects
#: (Newton–Schulz, online learning, schedules, mesh distribution, weight decay, QK-clip), the
#: blocks, routing and the Newton–Schulz tools (with the coefficient table a state holds). A new
#: name beyond it belongs in a submodule.
MAX_TOP_LEVEL = 42


def test_all_is_short_and_every_name_exists():
    names = optorth.__all__
    assert len(names) <= MAX_TOP_LEVEL, len(names)
    assert len(set(names)) == len(names), "duplicates in optorth.__all__"
    missing = [name for name in names if not hasattr(optorth, name)]
    assert not missing, missing
    assert set(READY) <= set(names)
    for module in (optorth.optimizers, optorth.norms, optorth.blocks, optorth.ns,
                   optorth.matrices):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__


def test_ready_list_is_every_ready_optimizer():
    assert len(READY) == len(set(READY)) == 12
    for name in READY:
        func = getattr(optorth, name)
        assert func is getattr(optorth.optimizers, name)
        assert list(_signature(name).parameters)[0] == "learning_rate", name


@pytest.mark.parametrize("name", READY)
def test_at_most_12_parameters_each_documented_in_its_own_docstring(name):
    parameters = _signature(name).parameters
    assert len(parameters) <= MAX_PARAMETERS, (name, list(parameters))
    kinds = {p.kind for p in parameters.values()}
    assert kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY}
    documented = _documented_args(getattr(optorth.optimizers, name))
    assert set(parameters) - documented == set(), f"{name}: undocumented arguments"
    assert documented - set(parameters) == set(), f"{name}: documents arguments it lacks"


def test_documented_args_parser_on_a_known_docstring():
    def example(alpha, beta_two, *, gamma=None):
        """Summary.

        Args:
          alpha: first.
          beta_two: second, with a long
            continuation line: not a name.
          gamma (int): third.

        Returns:
          nothing: not an argument.
        """

    assert _documented_args(example) == {"alpha", "beta_two", "gamma"}


def test_one_name_per_concept():
    used = {name: set(_signature(name).parameters) for name in READY}
    for name, parameters in used.items():
        retired = sorted(p for p in parameters if p in FORBIDDEN or p.startswith("adam_"))
        assert not retired, f"optorth.{name} takes retired spellings {retired}"
    # learning_rate comes first and positionally everywhere, as in optax.
    assert all(_signature(n).parameters["learning_rate"].kind
               == inspect.Parameter.POSITIONAL_OR_KEYWORD for n in READY)


def _argument_table() -> dict[str, set[str]]:
    """``{argument name: the ready optimizers it applies to}`` from the README table."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- argument-table:start -->\n(.*?)<!-- argument-table:end -->", text,
                      re.S)
    assert match, "README.md has no <!-- argument-table:start --> ... :end --> block"
    rows = [line for line in match.group(1).splitlines() if line.strip().startswith("|")]
    header = [cell.strip().lower() for cell in rows[0].strip().strip("|").split("|")]
    assert header == ["name", "meaning", "where it applies"], header
    assert set(rows[1].replace("|", "").replace(" ", "")) <= set("-:"), rows[1]
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        assert len(cells) == 3, row
        name = cells[0].strip("`")
        assert re.fullmatch(r"\w+", name), row
        assert name not in table, f"README argument table lists {name!r} twice"
        where = cells[2].replace("`", "")
        applies = set(READY) if where.strip() == "all" else {
            w.strip() for w in where.split(",") if w.strip()}
        unknown = applies - set(READY)
        assert not unknown, f"README row {name!r} names unknown optimizers {sorted(unknown)}"
        table[name] = applies
    return table


def test_readme_argument_table_matches_the_signatures():
    table = _argument_table()
    for name in READY:
        expected = {arg for arg, applies in table.items() if name in applies}
        actual = set(_signature(name).parameters)
        assert actual == expected, (
            f"optorth.{name}: in the signature but not in the README table "
            f"{sorted(actual - expected)}; in the table but not the signature "
            f"{sorted(expected - actual)}")
    assert all(table.values()), [arg for arg, applies in table.items() if not applies]
    assert not set(table) & FORBIDDEN


# ----- every public callable -----------------------------------------------------------------
#: Every public module; each declares its surface in ``__all__``.
PUBLIC_MODULES = (optorth, optorth.optimizers, optorth.blocks, optorth.ns, optorth.matrices,
                  optorth.norms, optorth.checkpoint, optorth.contrib, optorth.nn)
#: Spellings retired everywhere in favour of one name per concept (the name in the comment).
RETIRED_EVERYWHERE = {
    "ns_dtype",  # ns=NewtonSchulz(dtype=...)
    "epsilon1", "second_moment_eps",  # eps
    "epsilon2",  # min_scale
    "momentum_convention",  # convention
    "rms_factor",  # scale=ShapeScale(..., rms=)
    "max_decay",  # beta2, the cap of the second-moment EMA's decay
}
#: Callables that mirror an optax signature keep optax's spelling of Adam's betas (``b1``,
#: ``b2``) so that their values pass to ``optax.adam(**h._asdict())`` or stand in for it.
OPTAX_SPELLING = (optorth.contrib.ScaledHyperparams, optorth.contrib.sqrt_scaling_rule,
                  optorth.contrib.diffgrad, optorth.contrib.scale_by_diffgrad)
#: ``learning_rate`` is an ``optax.ScalarOrSchedule`` wherever it is a step size of the model;
#: these two are the step size of a fit of Newton–Schulz coefficients (a float).
FIT_STEP_SIZES = (optorth.fit_schedule, optorth.ns.OnlineLearning)


def _public_callables() -> dict[str, object]:
    """``{qualified name: object}`` for every function and class in a public ``__all__``
    (each object once, under the first name it is exported by)."""
    found, seen = {}, set()
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
                seen.add(id(obj))
                found[f"{module.__name__}.{name}"] = obj
    return found


def _parameters(obj) -> dict[str, inspect.Parameter]:
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return {}
    return dict(inspect.signature(obj).parameters)


def _arg_text(obj) -> dict[str, str]:
    """``{name: text}`` of the entries of a Google-style ``Args:``/``Attributes:`` section."""
    doc = inspect.getdoc(obj) or ""
    entries = re.finditer(r"^\s{2,}(\w+)(?: \([^)]*\))?: (.*(?:\n\s{4,}.*)*)", doc, re.M)
    text = {}
    for match in entries:
        text.setdefault(match.group(1), " ".join(match.group(2).split()))
    return text


def test_every_public_module_declares_its_surface():
    for module in PUBLIC_MODULES:
        names = module.__all__
        assert len(set(names)) == len(names), module.__name__
        assert all(hasattr(module, name) for name in names), module.__name__
    assert len(_public_callables()) > 100


def test_no_public_callable_takes_a_retired_spelling():
    for path, obj in _public_callables().items():
        parameters = set(_parameters(obj))
        retired = {p for p in parameters if p in RETIRED_EVERYWHERE or p.startswith("adam_")}
        if not any(obj is mirror for mirror in OPTAX_SPELLING):
            retired |= parameters & {"b1", "b2"}
        assert not retired, f"{path} takes retired spellings {sorted(retired)}"


def test_learning_rate_is_a_scalar_or_schedule_everywhere():
    for path, obj in _public_callables().items():
        parameter = _parameters(obj).get("learning_rate")
        if parameter is None or any(obj is fit for fit in FIT_STEP_SIZES):
            continue
        annotation = str(parameter.annotation)
        assert "ScalarOrSchedule" in annotation, (path, annotation)


def test_beta_rules_and_specs_mean_one_thing_each():
    """``beta``: a momentum (EMA) coefficient; ``rules``: `optorth.route`'s ``(regex, spec)``
    pairs; ``specs``: what `optorth.matrices.resolve_specs` reads (or a pointer to a
    sibling's entry that says so). No callable takes both ``rules`` and ``specs``."""
    for path, obj in _public_callables().items():
        parameters, text = _parameters(obj), _arg_text(obj)
        assert not {"rules", "specs"} <= set(parameters), path
        if "beta" in parameters and "State" not in path:
            assert re.search(r"momentum|EMA", text.get("beta", "")), (path, text.get("beta"))
        if "rules" in text and obj is not optorth.route:  # route's own entry defines them
            assert "optorth.route" in text["rules"], (path, text["rules"])
        if "specs" in text and obj is not optorth.matrices.resolve_specs:  # defines them
            assert re.search(r"resolve_specs|^see |^as in |^as given", text["specs"]), (
                path, text["specs"])

