"""Every optimizer under ``jax.jit`` with ``NamedSharding`` on 8 simulated CPU devices.

The cases need 8 devices, which a process must ask for before JAX starts its backend; the
rest of the suite runs on one. So in a normal run the test
``test_cases_on_8_simulated_devices`` starts this file (and the sharded = unsharded property
of ``test_properties.py``; ``test_distribution.py`` starts itself the same way) again in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the cases skip
themselves in the parent), and ``XLA_FLAGS=--xla_force_host_platform_device_count=8 pytest
tests/test_sharding.py`` runs them directly.

Checked for automatic and explicit mesh axes (``jax.sharding.AxisType``) and for parameters
sharded on a matrix axis (FSDP), on a stack axis and replicated: the update equals the
single-device update to float32 tolerance, the updates have the parameters' shardings and the
state's parameter-shaped leaves are sharded like the parameters. Also: the incumbent's
failure (optax 0.2.8), and the collectives in the compiled program.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _hlo import collective_counts, collectives_in_loops
from _simulated_devices import rerun_on_devices
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import optorth
from optorth import MatrixSpec

try:
    from jax.sharding import ShardingTypeError
except ImportError:  # jax 0.10: not re-exported
    from jax._src.core import ShardingTypeError


N_DEVICES = 8
needs_devices = pytest.mark.skipif(
    jax.device_count() < N_DEVICES,
    reason="needs 8 devices; run by test_cases_on_8_simulated_devices in a subprocess")


@pytest.mark.slow  # a second pytest process compiling every optimizer for 8 devices
def test_cases_on_8_simulated_devices(request):
    if jax.device_count() >= N_DEVICES:
        pytest.skip("this process has 8 devices: the cases run directly")
    here = os.path.dirname(__file__)
    rerun_on_devices(request, [__file__, f"{os.path.join(here, 'test_properties.py')}"
                                         "::test_sharded_equals_unsharded"])


# ----- parameters and layouts ------------------------------------------------------------------
RULES = [(r"^stack$", MatrixSpec.stacked())]
# One matrix shape per layout, so no stack mixes layouts (see test_mixed_layouts_*).
LAYOUTS = {
    "fsdp": ((64, 32), P("x", None)),  # sharded on the fan-in axis
    "fsdp_out": ((32, 96), P(None, "x")),  # sharded on the fan-out axis
    "stack": ((8, 16, 32), P("x", None, None)),  # (L, in, out) sharded on L
    "replicated": ((16, 48), P()),
    "bias": ((48,), P()),
}

OPTIMIZERS = {
    "muon": lambda: optorth.muon(rules=RULES),
    # refines its table on the first update already (every=1)
    "muon_online": lambda: optorth.muon(rules=RULES, ns=optorth.NewtonSchulz(
        learn=optorth.OnlineLearning(every=1, inner_steps=2))),
    "turbo_muon": lambda: optorth.turbo_muon(rules=RULES),
    "root": lambda: optorth.root(rules=RULES),
    "auon": lambda: optorth.auon(rules=RULES),
    "hybrid_auon": lambda: optorth.hybrid_auon(rules=RULES),
    "normalized_sgdm": lambda: optorth.normalized_sgdm(0.1, rules=RULES),
    "signum": lambda: optorth.signum(0.1, rules=RULES),
    "trust_region": lambda: optorth.trust_region(0.1, rules=RULES),
    "adafactor": lambda: optorth.adafactor(rules=RULES),
    "normuon": lambda: optorth.normuon(rules=RULES),
    "adamuon": lambda: optorth.adamuon(rules=RULES),
    "factored_muon": lambda: optorth.factored_muon(rules=RULES),
}


def _mesh(kind):
    return jax.make_mesh((N_DEVICES,), ("x",), axis_types=(kind,))


def _host_tree(layouts, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(layouts))
    return {name: np.asarray(jax.random.normal(k, shape))
            for k, (name, (shape, _)) in zip(keys, layouts.items(), strict=True)}


def _placed(host, layouts, mesh):
    return {name: jax.device_put(host[name], NamedSharding(mesh, layouts[name][1]))
            for name in host}


def _same_sharding(a, b) -> bool:
    return a.sharding.is_equivalent_to(b.sharding, a.ndim)


def _param_shaped(state, params):
    """State leaves shaped like a parameter, with that parameter (sharded like it)."""
    by_shape = {}
    for p in params.values():
        by_shape.setdefault(p.shape, []).append(p)
    return [(x, by_shape[x.shape]) for x in jax.tree.leaves(state) if x.shape in by_shape]


_REFERENCE = {}


def _reference(name, host_params, host_grads):
    """The single-device update (jitted once per optimizer)."""
    if name not in _REFERENCE:
        tx = OPTIMIZERS[name]()
        state = tx.init(host_params)
        _REFERENCE[name] = jax.jit(tx.update)(host_grads, state, host_params)[0]
    return _REFERENCE[name]


# Every optimizer under both axis types; the default run keeps one optimizer per code path
# (grouped Newton–Schulz, per-shape tables and soft thresholding, grouped hybrid lmo,
# elementwise lmo, factored and elementwise second moments) and marks the rest slow.
FAST = {("muon", "explicit"), ("muon_online", "explicit"), ("muon_online", "auto"),
        ("root", "explicit"), ("hybrid_auon", "explicit"),
        ("signum", "explicit"), ("adafactor", "explicit"), ("factored_muon", "explicit"),
        ("adamuon", "explicit"), ("muon", "auto"), ("root", "auto"), ("hybrid_auon", "auto")}
CASES = [pytest.param(name, kind, id=f"{name}-{kind_id}",
                      marks=() if (name, kind_id) in FAST else pytest.mark.slow)
         for name in OPTIMIZERS
         for kind, kind_id in ((AxisType.Explicit, "explicit"), (AxisType.Auto, "auto"))]


@needs_devices
@pytest.mark.parametrize("name, kind", CASES)
def test_sharded_update_equals_single_device(name, kind):
    mesh = _mesh(kind)
    host_params, host_grads = _host_tree(LAYOUTS, 0), _host_tree(LAYOUTS, 1)
    params, grads = _placed(host_params, LAYOUTS, mesh), _placed(host_grads, LAYOUTS, mesh)
    tx = OPTIMIZERS[name]()
    with jax.set_mesh(mesh):
        state = tx.init(params)
        updates, new_state = jax.jit(tx.update)(grads, state, params)
    expected = _reference(name, host_params, host_grads)
    for key in params:
        np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]),
                                   rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}")
        assert _same_sharding(updates[key], params[key]), (key, updates[key].sharding)
    unsharded = [x for leaf_state in (state, new_state)
                 for x, candidates in _param_shaped(leaf_state, params)
                 if not any(_same_sharding(x, p) for p in candidates)]
    assert not unsharded, [(x.shape, x.sharding) for x in unsharded]


@needs_devices
def test_mixed_layouts_in_one_stack_under_explicit_axes():
    """Replicated, fan-in- and fan-out-sharded leaves of one matrix shape share a stack."""
    layouts = {"fsdp": ((64, 32), P("x", None)), "tp": ((32, 64), P(None, "x")),
               "rep": ((32, 64), P()), "tall_rep": ((64, 32), P())}
    mesh = _mesh(AxisType.Explicit)
    host = _host_tree(layouts, 2)
    params = _placed(host, layouts, mesh)
    tx = optorth.muon()
    with jax.set_mesh(mesh):
        updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    expected, _ = jax.jit(tx.update)(host, tx.init(host), host)
    for key in params:
        np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]),
                                   rtol=1e-4, atol=1e-6)
        assert _same_sharding(updates[key], params[key])


@needs_devices
def test_two_axis_mesh_and_forced_distribution():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    layouts = {"a": ((64, 32), P("data", None)), "b": ((32, 64), P(None, "model")),
               "c": ((4, 32, 16), P("data", None, "model"))}
    host = _host_tree(layouts, 3)
    params = _placed(host, layouts, mesh)
    specs = {"a": MatrixSpec(), "b": MatrixSpec(), "c": MatrixSpec.stacked()}
    reference = optorth.orthogonalize(specs=specs)
    expected, _ = jax.jit(reference.update)(host, reference.init(host))
    for distribute in (None, True, False):
        tx = optorth.orthogonalize(specs=specs, distribute=distribute)
        with jax.set_mesh(mesh):
            out, _ = jax.jit(tx.update)(params, tx.init(params))
        for key in params:
            np.testing.assert_allclose(np.asarray(out[key]), np.asarray(expected[key]),
                                       rtol=1e-4, atol=1e-6)
            assert _same_sharding(out[key], params[key])


@needs_devices
@pytest.mark.skipif(optax.__version__ != "0.2.8", reason="documents optax 0.2.8 behaviour")
def test_incumbent_fails_on_fsdp_under_explicit_axes_and_we_do_not():
    """optax.contrib.muon (0.2.8) raises for a 2-D weight sharded on a matrix axis."""
    mesh = _mesh(AxisType.Explicit)
    for spec in (P("x", None), P(None, "x")):
        params = {"w": jax.device_put(jnp.ones((64, 32)) + jnp.eye(64, 32),
                                      NamedSharding(mesh, spec))}
        incumbent = optax.contrib.muon(0.02)
        with jax.set_mesh(mesh), pytest.raises(ShardingTypeError, match="sharded"):
            jax.jit(incumbent.update)(params, incumbent.init(params), params)
        ours = optorth.muon()
        with jax.set_mesh(mesh):
            updates, _ = jax.jit(ours.update)(params, ours.init(params), params)
        assert _same_sharding(updates["w"], params["w"])


@needs_devices
@pytest.mark.parametrize("kind", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"])
def test_fsdp_stack_costs_two_all_to_alls_and_a_local_iteration(kind):
    """4 layers of 64×128 and 4 of 128×64 (one stack of 8), FSDP on the fan-in axis."""
    mesh = _mesh(kind)
    layouts = {f"up{i}": ((64, 128), P("x", None)) for i in range(4)}
    layouts |= {f"down{i}": ((128, 64), P("x", None)) for i in range(4)}
    params = _placed(_host_tree(layouts, 4), layouts, mesh)
    tx = optorth.orthogonalize()
    with jax.set_mesh(mesh):
        hlo = jax.jit(tx.update).lower(params, tx.init(params)).compile().as_text()
    counts = collective_counts(hlo)
    assert collectives_in_loops(hlo) == 0
    assert 1 <= counts["all-to-all"] <= 4 and sum(counts.values()) == counts["all-to-all"], counts
    # Without the strategy XLA partitions every product of the standard iteration:
    # collectives in every iteration. (The Gram form iterates on the small replicated Gram
    # matrix, so it has none inside its loop even then.)
    plain = optorth.orthogonalize(optorth.NewtonSchulz(method="standard"), distribute=False)
    with jax.set_mesh(mesh):
        plain_hlo = jax.jit(plain.update).lower(params, plain.init(params)).compile().as_text()
    assert collectives_in_loops(plain_hlo) > 0
    if kind == AxisType.Auto:  # the incumbent: collectives inside every iteration
        incumbent = optax.contrib.muon(0.02)
        with jax.set_mesh(mesh):
            lowered = jax.jit(incumbent.update).lower(params, incumbent.init(params), params)
        theirs = collective_counts(lowered.compile().as_text())
        assert sum(theirs.values()) > sum(counts.values()), (theirs, counts)
