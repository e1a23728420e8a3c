"""``optorth.Distribution``: which mesh axes carry the stacks, what stays local, the budget.

The policy object is checked on one device; the placements on 8 simulated CPU devices (these
cases skip themselves in a one-device process and run in the subprocess that
``test_cases_on_8_simulated_devices`` starts). Every case compares the
update with the single-device one and the output shardings with the parameters', and reads
the collectives of the compiled program: which kinds, how many, and which mesh axes their
device groups span.
"""

import dataclasses
import pathlib
import re

import jax
import numpy as np
import optax
import pytest
from _hlo import collective_counts, collective_groups, entry_collectives
from _simulated_devices import rerun_on_devices
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import optorth
from optorth import Distribution, MatrixSpec

N_DEVICES = 8
needs_devices = pytest.mark.skipif(
    jax.device_count() < N_DEVICES,
    reason="needs 8 devices; run by test_cases_on_8_simulated_devices in a subprocess")


@pytest.mark.slow  # a second pytest process compiling sharded programs for 8 devices
def test_cases_on_8_simulated_devices(request):
    if jax.device_count() >= N_DEVICES:
        pytest.skip("this process has 8 devices: the cases run directly")
    rerun_on_devices(request, [__file__])


# ----- the policy object (one device) ----------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "sometimes"}, "mode"),
    ({"axes": (1,)}, "axis names"),
    ({"axes": ("x", "x")}, "repeats"),
    ({"axes": "fsdp", "replica_axes": "fsdp"}, "replica"),
    ({"memory_budget": 0}, "memory_budget"),
    ({"memory_budget": 1.5}, "memory_budget"),
    ({"keep_local": "yes"}, "keep_local"),
    ({"max_imbalance": 0.9}, "max_imbalance"),
    ({"max_imbalance": float("nan")}, "max_imbalance"),
    ({"max_imbalance": True}, "max_imbalance"),
    ({"max_imbalance": "1.2"}, "max_imbalance"),
])
def test_bad_policies_are_refused_where_they_are_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distribution(**kwargs)


def test_policy_is_hashable_static_and_reaches_the_optimizers():
    policy = Distribution(axes="fsdp", replica_axes=["replica"], memory_budget=2**20)
    assert policy.axes == ("fsdp",) and policy.replica_axes == ("replica",)
    assert hash(policy) == hash(Distribution(axes=("fsdp",), replica_axes=("replica",),
                                             memory_budget=2**20))
    assert optorth.NewtonSchulz(distribute=True).distribute.mode == "always"
    assert optorth.NewtonSchulz(distribute=False).distribute.mode == "never"
    assert optorth.NewtonSchulz().distribute == Distribution()
    with pytest.raises(ValueError, match="distribute"):
        optorth.NewtonSchulz(distribute="fsdp")
    with pytest.raises(ValueError, match="distribute"):
        optorth.orthogonalize(distribute="fsdp")
    # static under inject_hyperparams: the policy is not mistaken for a hyperparameter
    tx = optax.inject_hyperparams(optorth.muon)(
        learning_rate=0.02, ns=optorth.NewtonSchulz(distribute=policy))
    params = {"w": np.ones((4, 8), np.float32)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert np.all(np.isfinite(updates["w"]))


def test_for_params_reads_the_axes_the_parameters_use():
    params = {"w": np.ones((4, 8), np.float32), "b": np.ones(8, np.float32)}
    assert Distribution.for_params(params).axes == ()
    assert Distribution.for_params(params, memory_budget=64).memory_budget == 64


def test_off_a_mesh_the_policy_changes_nothing():
    params = {"w": np.random.default_rng(0).standard_normal((3, 8, 16)).astype(np.float32)}
    specs = {"w": MatrixSpec.stacked()}
    plain = optorth.orthogonalize(specs=specs)
    budget = optorth.orthogonalize(specs=specs, distribute=Distribution(memory_budget=1))
    expected, _ = plain.update(params, plain.init(params))
    out, _ = budget.update(params, budget.init(params))
    np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(expected["w"]))


# ----- placements on 8 devices -----------------------------------------------------------------
def _tree(layouts, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(np.float32) for k, (shape, _) in layouts.items()}


KINDS = ["explicit", "auto_for_params"]


def _mesh_and_policy(shape, names, kind, layouts, **settings):
    """The mesh for ``kind`` and the policy a user writes there: the default under explicit
    axes; under automatic axes (layouts hidden while tracing) ``Distribution.for_params``."""
    axis_type = AxisType.Explicit if kind == "explicit" else AxisType.Auto
    mesh = jax.make_mesh(shape, names, axis_types=(axis_type,) * len(names))
    if kind == "explicit":
        return mesh, Distribution(**settings)
    with jax.set_mesh(mesh):
        placed = {k: jax.device_put(np.zeros(s, np.float32), NamedSharding(mesh, spec))
                  for k, (s, spec) in layouts.items()}
    return mesh, Distribution.for_params(placed, **settings)


def _compiled_update(tx, layouts, mesh, seed=0):
    """(updates, expected single-device updates, params, compiled HLO text)."""
    host = _tree(layouts, seed)
    expected, _ = jax.jit(tx.update)(host, tx.init(host), host)
    with jax.set_mesh(mesh):
        params = {k: jax.device_put(host[k], NamedSharding(mesh, spec))
                  for k, (_, spec) in layouts.items()}
        state = jax.jit(tx.init)(params)
        update = jax.jit(tx.update)
        hlo = update.lower(params, state, params).compile().as_text()
        updates, _ = update(params, state, params)
    return updates, expected, params, hlo


def _check_equal_and_placed(updates, expected, params):
    for key in params:
        np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]),
                                   rtol=1e-4, atol=1e-6, err_msg=key)
        assert updates[key].sharding.is_equivalent_to(params[key].sharding, params[key].ndim), (
            key, updates[key].sharding, params[key].sharding)


def _axes_crossed(hlo, mesh) -> set[str]:
    """Mesh axes along which some collective's device group spans more than one position."""
    ids = np.vectorize(lambda d: d.id)(mesh.devices)
    where = {int(i): np.unravel_index(k, ids.shape) for k, i in enumerate(ids.ravel())}
    crossed = set()
    for group in collective_groups(hlo):
        coords = np.array([where[d] for d in group])
        crossed |= {a for a, col in zip(mesh.axis_names, coords.T, strict=True)
                    if len(set(col)) > 1}
    return crossed


DENSE = {f"l{i}/{name}": (shape, None) for i in range(2)
         for name, shape in (("up", (16, 64)), ("down", (64, 16)))}


def _layouts(spec_of):
    return {k: (shape, spec_of(k, shape)) for k, (shape, _) in DENSE.items()}


@needs_devices
@pytest.mark.parametrize("kind", KINDS)
def test_hsdp_never_crosses_the_replica_axis(kind):
    """replica(2) × fsdp(4): the stacks split over fsdp only (no parameter is sharded on
    replica)."""
    layouts = _layouts(lambda k, s: P("fsdp", None))
    mesh, policy = _mesh_and_policy((2, 4), ("replica", "fsdp"), kind, layouts)
    tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=policy))
    updates, expected, params, hlo = _compiled_update(tx, layouts, mesh)
    _check_equal_and_placed(updates, expected, params)
    assert _axes_crossed(hlo, mesh) == {"fsdp"}
    counts = collective_counts(hlo)
    assert sum(counts.values()) == counts["all-to-all"] > 0, counts


@needs_devices
def test_the_default_policy_reads_the_layouts_from_an_init_outside_jit():
    """Automatic axes, no policy given: ``tx.init(params)`` called on the placed parameters
    (as nnx.Optimizer and most loops do) records their layouts, so HSDP moves nothing across
    the replica axis and the updates keep the parameters' shardings."""
    layouts = _layouts(lambda k, s: P("fsdp", None))
    mesh = jax.make_mesh((2, 4), ("replica", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    tx = optorth.muon()
    host = _tree(layouts, 0)
    expected, _ = jax.jit(tx.update)(host, tx.init(host), host)
    with jax.set_mesh(mesh):
        params = {k: jax.device_put(host[k], NamedSharding(mesh, spec))
                  for k, (_, spec) in layouts.items()}
        state = tx.init(params)
        update = jax.jit(tx.update)
        hlo = update.lower(params, state, params).compile().as_text()
        updates, _ = update(params, state, params)
    _check_equal_and_placed(updates, expected, params)
    assert _axes_crossed(hlo, mesh) == {"fsdp"}


@needs_devices
def test_named_axes_and_for_params_under_automatic_axes():
    mesh = jax.make_mesh((2, 4), ("replica", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    layouts = _layouts(lambda k, s: P("fsdp", None))
    with jax.set_mesh(mesh):
        placed = {k: jax.device_put(np.zeros(s, np.float32), NamedSharding(mesh, spec))
                  for k, (s, spec) in layouts.items()}
    assert Distribution.for_params(placed).axes == ("fsdp",)
    for policy in (Distribution(axes="fsdp"), Distribution(replica_axes="replica"),
                   Distribution.for_params(placed)):
        tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=policy))
        updates, expected, params, hlo = _compiled_update(tx, layouts, mesh)
        _check_equal_and_placed(updates, expected, params)
        assert _axes_crossed(hlo, mesh) == {"fsdp"}
    # the default under automatic axes spreads over every axis (documented)
    updates, _, _, hlo = _compiled_update(optorth.muon(), layouts, mesh)
    assert "replica" in _axes_crossed(hlo, mesh)


@needs_devices
@pytest.mark.parametrize("kind", KINDS + ["auto"])
def test_expert_sharded_leaves_are_orthogonalized_in_place(kind):
    """Four (E=8, in, out) expert kernels sharded on E over 8 devices: every device holds
    whole matrices already, so the whole update compiles to no collective at all (under
    automatic axes even with the default policy: each leaf divides evenly, so it forms its own
    stack, whose home is where it lies)."""
    layouts = {f"moe{i}/{n}": (shape, P("expert", None, None)) for i in range(2)
               for n, shape in (("wi", (8, 16, 32)), ("wo", (8, 32, 16)))}
    if kind == "auto":
        mesh, policy = jax.make_mesh((8,), ("expert",), axis_types=(AxisType.Auto,)), None
    else:
        mesh, policy = _mesh_and_policy((8,), ("expert",), kind, layouts)
    tx = optorth.muon(rules=[(r"moe\d/w", MatrixSpec.stacked())],
                      ns=optorth.NewtonSchulz(distribute=policy))
    updates, expected, params, hlo = _compiled_update(tx, layouts, mesh)
    _check_equal_and_placed(updates, expected, params)
    assert sum(collective_counts(hlo).values()) == 0, collective_counts(hlo)


@needs_devices
@pytest.mark.parametrize("kind", KINDS)
def test_fsdp_times_tensor_parallel_moves_matrices_with_all_to_alls_only(kind):
    """(fsdp 4) × (tensor 2), kernels sharded on both of their axes: one all-to-all per axis
    (under automatic axes XLA adds a permute of the transposed part), no gather of whole
    weights."""
    layouts = _layouts(lambda k, s: P("fsdp", "tensor") if s[0] < s[1] else P("tensor", "fsdp"))
    mesh, policy = _mesh_and_policy((4, 2), ("fsdp", "tensor"), kind, layouts)
    tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=policy))
    updates, expected, params, hlo = _compiled_update(tx, layouts, mesh)
    _check_equal_and_placed(updates, expected, params)
    counts = collective_counts(hlo)
    assert counts["all-to-all"] > 0 and not counts["all-gather"] and not counts["all-reduce"], (
        counts)


def _budget_case(layouts, specs, budget, seed):
    """(chunked out, expected, params, chunked HLO, unbudgeted HLO) for orthogonalize, both
    compiled (scheduled) HLO texts."""
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Explicit,))
    tx = optorth.orthogonalize(optorth.NewtonSchulz(distribute=Distribution(
        memory_budget=budget)), specs=specs)
    whole_tx = optorth.orthogonalize(specs=specs)
    host = _tree(layouts, seed)
    expected, _ = jax.jit(whole_tx.update)(host, whole_tx.init(host))
    with jax.set_mesh(mesh):
        params = {k: jax.device_put(host[k], NamedSharding(mesh, s)) for k, (_, s) in
                  layouts.items()}
        out, _ = jax.jit(tx.update)(params, tx.init(params))
        chunked = jax.jit(tx.update).lower(params, tx.init(params)).compile().as_text()
        whole = jax.jit(whole_tx.update).lower(params, whole_tx.init(params)).compile()
    return out, expected, params, chunked, whole.as_text()


@needs_devices
def test_memory_budget_splits_a_stack_into_pieces_that_run_one_after_another():
    """16 matrices of 16×64 over 8 devices; a budget of one float32 matrix per device moves
    and orthogonalizes them as two pieces of 8, the second waiting for the first: in the
    compiled schedule its all-to-all comes only after the first piece's result has moved
    back (a scalar all-reduce carries the dependence), so one device never holds both."""
    layouts = {f"w{i}": ((16, 64), P(None, "fsdp")) for i in range(16)}
    out, expected, params, chunked, whole = _budget_case(layouts, None, 16 * 64 * 4, 1)
    _check_equal_and_placed(out, expected, params)
    assert entry_collectives(whole) == ["all-to-all"] * 2
    assert entry_collectives(chunked) == ["all-to-all"] * 2 + ["all-reduce"] + ["all-to-all"] * 2



@needs_devices
def test_memory_budget_iterates_one_large_leaf_in_chunks():
    """One stacked leaf of 16 matrices (2 per device) with a budget of one: a loop of two
    chunks, each sliced where the matrices lie and moved on its own."""
    layouts = {"w": ((16, 16, 64), P(None, None, "fsdp"))}
    specs = {"w": MatrixSpec.stacked()}
    out, expected, params, chunked, whole = _budget_case(layouts, specs, 16 * 64 * 4, 2)
    _check_equal_and_placed(out, expected, params)
    assert chunked.count(" while(") > whole.count(" while(")


# ----- single matrices split over devices ------------------------------------------------------
def _planned_imbalance(d, layers, devices, **settings):
    """(busiest / even work, splits) that the plan gives GPT-2-like shapes on a 1-D mesh."""
    from jax.sharding import AbstractMesh

    from optorth.matrices._grouping import plan_groups
    from optorth.matrices._placement import Layouts, plan_placements, planned_work

    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)] * layers
    groups = plan_groups(shapes, [np.dtype(np.float32)] * len(shapes),
                         [MatrixSpec()] * len(shapes), transpose_tall=True)
    mesh = AbstractMesh((devices,), ("fsdp",))
    plan = plan_placements(groups, mesh, Distribution(**settings), Layouts({}, {}, None))
    busiest, even = planned_work(plan, mesh)
    return busiest / even, [p.split for _, p in plan], [g.size for g, _ in plan]


@pytest.mark.parametrize("d, layers", [(768, 12), (1024, 24)])
@pytest.mark.parametrize("devices", [8, 16, 32, 64])
def test_the_plan_splits_matrices_until_the_work_is_balanced(d, layers, devices):
    """GPT-2 small / medium shapes: whole matrices alone leave the busiest device up to 1.8×
    an even split at 64 devices; the plan splits the stacks that gain most, to ≤ 1.15."""
    ratio, splits, _ = _planned_imbalance(d, layers, devices)
    whole, _, _ = _planned_imbalance(d, layers, devices, max_imbalance=None)
    assert ratio <= 1.15 + 1e-9, (ratio, splits)
    if whole <= 1.15:  # nothing to gain: no collectives inside the iteration
        assert splits == [1] * len(splits)
    else:
        assert max(splits) > 1 and ratio < whole


def test_the_plan_splits_only_the_matrices_that_do_not_divide_evenly():
    """GPT-2 small on 16 devices: of the 24 MLP matrices, 16 stay whole (one per device) and
    only the other 8 are split in halves, where splitting all 24 would exchange Gram
    matrices for three times as many; the balance is the same."""
    ratio, splits, sizes = _planned_imbalance(768, 12, 16)
    assert ratio <= 1.15 + 1e-9
    assert sorted(zip(sizes, splits, strict=True)) == [(8, 2), (12, 1), (12, 1), (16, 1)]


WIDE = {"a/w": ((32, 512), P(None, "fsdp")), "b/w": ((512, 32), P("fsdp", None))}


@needs_devices
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ns", [optorth.NewtonSchulz(), optorth.NewtonSchulz("turbo"),
                                optorth.NewtonSchulz(method="standard")],
                         ids=["jordan_gram", "turbo_aol", "standard"])
def test_few_matrices_are_split_column_wise_and_match_one_device(kind, ns):
    """Two 32×512 matrices (one stored tall) on 8 devices: each is split into 4 column blocks
    of 128, so every device iterates on a quarter matrix; partial Gram matrices are summed and
    m×m products split by rows over collective-permutes. Equal to one device, output shardings
    equal to the parameters'; with ``max_imbalance=None`` whole matrices and no permutes."""
    mesh, policy = _mesh_and_policy((8,), ("fsdp",), kind, WIDE)
    results = {}
    for name, setting in (("split", {}), ("whole", {"max_imbalance": None})):
        distribute = dataclasses.replace(policy, **setting)
        tx = optorth.muon(ns=dataclasses.replace(ns, distribute=distribute))
        updates, expected, params, hlo = _compiled_update(tx, WIDE, mesh)
        _check_equal_and_placed(updates, expected, params)
        results[name] = collective_counts(hlo)
    assert results["split"]["collective-permute"] > 0, results
    assert results["whole"].get("collective-permute", 0) == 0, results


@needs_devices
@pytest.mark.parametrize("kind", KINDS)
def test_a_split_of_row_sharded_matrices_moves_without_gathering_them(kind):
    """FSDP on the short axis (32×512 matrices sharded by rows): the stack reaches its column
    blocks, and comes back, through all-to-alls, never an all-gather of whole matrices onto
    every device."""
    layouts = {f"{k}/w": ((32, 512), P("fsdp", None)) for k in "ab"}
    mesh, policy = _mesh_and_policy((8,), ("fsdp",), kind, layouts)
    tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=policy))
    updates, expected, params, hlo = _compiled_update(tx, layouts, mesh)
    _check_equal_and_placed(updates, expected, params)
    counts = collective_counts(hlo)
    assert counts["collective-permute"] > 0 and not counts["all-gather"], counts


@needs_devices
def test_a_split_in_bfloat16_matches_whole_matrices():
    """16-bit iteration: the partial Gram matrices are summed in float32, so splitting adds no
    more rounding than one device's product: split and whole bfloat16 updates are equally far
    from the float32 one."""
    mesh, policy = _mesh_and_policy((8,), ("fsdp",), "explicit", WIDE)
    out = {}
    for name, setting in (("split", {}), ("whole", {"max_imbalance": None})):
        ns = optorth.NewtonSchulz(dtype="bfloat16",
                                  distribute=dataclasses.replace(policy, **setting))
        out[name], _, _, _ = _compiled_update(optorth.muon(ns=ns), WIDE, mesh)
    _, float32, _, _ = _compiled_update(optorth.muon(), WIDE, mesh)
    for key in WIDE:
        error = {name: float(np.linalg.norm(np.asarray(out[name][key]) - float32[key]))
                 for name in out}
        assert error["split"] <= 1.5 * error["whole"], (key, error)


@needs_devices
def test_a_split_stays_off_the_replica_axis():
    """replica(2) × fsdp(4): the column groups form inside fsdp; nothing crosses replica."""
    layouts = {"a/w": ((32, 512), P(None, "fsdp"))}
    mesh, policy = _mesh_and_policy((2, 4), ("replica", "fsdp"), "explicit", layouts)
    tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=policy))
    updates, expected, params, hlo = _compiled_update(tx, layouts, mesh)
    _check_equal_and_placed(updates, expected, params)
    assert collective_counts(hlo)["collective-permute"] > 0
    assert _axes_crossed(hlo, mesh) == {"fsdp"}


@needs_devices
def test_the_adaptive_dual_scale_keeps_whole_matrices():
    """``orthogonalize(adaptive=True)`` multiplies by ⟨M, O⟩, a sum over the whole matrix: its
    stacks are never split."""
    mesh, policy = _mesh_and_policy((8,), ("fsdp",), "explicit", WIDE)
    tx = optorth.orthogonalize(adaptive=True, distribute=policy,
                               specs={k: MatrixSpec() for k in WIDE})
    updates, expected, params, hlo = _compiled_update(tx, WIDE, mesh)
    scale = max(float(np.max(np.abs(expected[k]))) for k in WIDE)  # ⟨M, O⟩ = ‖M‖_* ≈ 30
    _check_equal_and_placed({k: v / scale for k, v in updates.items()},
                            {k: v / scale for k, v in expected.items()}, params)
    assert collective_counts(hlo).get("collective-permute", 0) == 0


@needs_devices
def test_an_axis_the_mesh_does_not_have_is_named_in_the_error():
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Explicit,))
    tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=Distribution(axes="data")))
    with pytest.raises(ValueError, match=r"\['data'\].*fsdp"):
        _compiled_update(tx, _layouts(lambda k, s: P("fsdp", None)), mesh)


@needs_devices
def test_the_scaling_out_page_example_runs():
    """The example of docs/scaling_out.md's policy section, as a reader pastes it."""
    page = (pathlib.Path(__file__).parents[1] / "docs" / "scaling_out.md").read_text()
    section = page.split("## The policy")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "scaling_out.md", "exec"), {})  # noqa: S102 - the docs' own code


def test_for_params_names_nnx_parameters_as_the_updates_do():
    """An NNX variable is one leaf of the updates' tree: its recorded path has no ``.value``."""
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.up = nnx.Linear(8, 16, rngs=rngs)

    params = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    mesh = jax.make_mesh((1,), ("fsdp",))
    params = jax.device_put(params, NamedSharding(mesh, P()))
    paths = [path for path, _ in Distribution.for_params(params).layouts]
    assert "['up']['kernel']" in paths and not any(p.endswith(".value") for p in paths)


@needs_devices
def test_for_params_plans_an_nnx_model_under_automatic_axes():
    """An NNX model's parameters (variables, not plain arrays) on an HSDP mesh: the layouts
    for_params records are found for every kernel, so nothing crosses the replica axis."""
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(16, 64, rngs=rngs), nnx.Linear(64, 16, rngs=rngs)])

    mesh = jax.make_mesh((2, 4), ("replica", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    host = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    layout = lambda x: NamedSharding(mesh, P("fsdp", None) if x.ndim == 2 else P())  # noqa: E731
    params = jax.tree.map(lambda x: jax.device_put(x, layout(x)), host)
    tx = optorth.muon(ns=optorth.NewtonSchulz(distribute=Distribution.for_params(params)))
    with jax.set_mesh(mesh):
        state = tx.init(params)
        update = jax.jit(tx.update)
        hlo = update.lower(params, state, params).compile().as_text()
        updates, _ = update(params, state, params)
    expected, _ = jax.jit(tx.update)(host, tx.init(host), host)
    for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
    assert _axes_crossed(hlo, mesh) == {"fsdp"}


@needs_devices
@pytest.mark.parametrize("kind", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"])
def test_nnx_state_of_variables_on_a_mesh_with_the_default_policy(kind):
    """The parameters as NNX variables (an ``nnx.State``), FSDP over 8 devices: the updates
    equal the single-device ones and keep the parameters' shardings."""
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(16, 64, rngs=rngs), nnx.Linear(64, 16, rngs=rngs)])

    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(kind,))
    host = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    layout = lambda x: NamedSharding(mesh, P("fsdp", None) if x.ndim == 2 else P())  # noqa: E731
    params = jax.tree.map(lambda x: jax.device_put(x, layout(x)), host)
    tx = optorth.muon()
    with jax.set_mesh(mesh):
        updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    expected, _ = jax.jit(tx.update)(host, tx.init(host), host)
    pairs = zip(jax.tree.leaves(updates), jax.tree.leaves(expected), jax.tree.leaves(params),
                strict=True)
    for got, want, param in pairs:
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
        assert got.sharding.is_equivalent_to(param.sharding, param.ndim)


# ----- output shardings over model kinds × meshes (compile-only) -------------------------------
def _model(kind):
    """(shapes by path, rules, expert paths) of a tiny model of ``kind``: two GPT-like layers
    (fused QKV, attention output, MLP), the same layers stacked on a leading layer axis, or an
    MLP of 8 experts ``(E, in, out)`` (sharded like any weight, or on the expert axis)."""
    d = 16
    layer = {"qkv": (d, 3 * d), "out": (d, d), "up": (d, 4 * d), "down": (4 * d, d),
             "bias": (4 * d,)}
    if kind == "dense":
        return {f"h{i}/{k}": s for i in range(2) for k, s in layer.items()}, None, ()
    if kind == "stacked":
        return ({f"h/{k}": (2, *s) for k, s in layer.items()},
                [(r"^h/(qkv|out|up|down)$", MatrixSpec.stacked())], ())
    shapes = {f"h{i}/{k}": s for i in range(2) for k, s in layer.items() if k in ("qkv", "out")}
    experts = {f"h{i}/{k}": (8, *s) for i in range(2) for k, s in
               (("w_in", (d, 4 * d)), ("w_out", (4 * d, d)))}
    return ({**shapes, **experts}, [(r"/w_(in|out)$", MatrixSpec.stacked())],
            tuple(experts) if kind == "moe_ep" else ())


def _layout(shape, sizes, expert):
    """FSDP on the expert axis (expert parallelism), else on the largest axis it divides;
    tensor parallelism on the largest remaining axis it divides (rank ≥ 2)."""
    spec = [None] * len(shape)

    def shard(axis):
        free = [i for i in range(len(shape)) if spec[i] is None and shape[i] % sizes[axis] == 0]
        if free:
            spec[max(free, key=lambda i: shape[i])] = axis

    if "fsdp" in sizes:
        if expert:
            spec[0] = "fsdp"
        else:
            shard("fsdp")
    if "tensor" in sizes and len(shape) >= 2:
        shard("tensor")
    return P(*spec)


MESHES = {"fsdp8": ((8,), ("fsdp",)), "hsdp2x4": ((2, 4), ("replica", "fsdp")),
          "fsdp4xtp2": ((4, 2), ("fsdp", "tensor"))}


@needs_devices
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["explicit", "auto_for_params", "auto_init_outside_jit"])
@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("model", ["dense", "stacked", "moe_fsdp", "moe_ep"])
def test_updates_and_momentum_keep_the_parameters_shardings(model, mesh_name, kind):
    """For every model kind and mesh, with the layouts known to the plan (explicit axes; or
    automatic axes with `Distribution.for_params`, or the default policy after an ``init``
    outside ``jax.jit`` on the placed parameters), the compiled update returns the updates
    and the momentum in the parameters' shardings."""
    shapes, rules, experts = _model(model)
    shape, names = MESHES[mesh_name]
    sizes = dict(zip(names, shape, strict=True))
    layouts = {k: (s, _layout(s, sizes, k in experts)) for k, s in shapes.items()}
    mesh, policy = _mesh_and_policy(shape, names, "explicit" if kind == "explicit" else
                                    "auto_for_params", layouts)
    if kind == "auto_init_outside_jit":
        policy = Distribution()
    tx = optorth.muon(rules=rules, ns=optorth.NewtonSchulz(distribute=policy))
    with jax.set_mesh(mesh):
        params = {k: jax.device_put(np.zeros(s, np.float32), NamedSharding(mesh, spec))
                  for k, (s, spec) in layouts.items()}
        state = tx.init(params)  # outside jit: the default policy records the layouts
        compiled = jax.jit(tx.update).lower(params, state, params).compile()
    update_shardings, state_shardings = compiled.output_shardings
    momentum = optorth.optimizers.matrix_state(state_shardings)[0].mu
    for key, param in params.items():
        for what, got in (("update", update_shardings[key]), ("momentum", momentum[key])):
            if not hasattr(got, "is_equivalent_to"):  # fallback leaves: no matrix momentum
                continue
            assert got.is_equivalent_to(param.sharding, param.ndim), (what, key, got,
                                                                      param.sharding)
