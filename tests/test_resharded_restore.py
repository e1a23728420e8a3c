"""A checkpoint written under one mesh continues training under another.

Trains the tiny model of ``_sharded_model.py`` with ``optorth.muon`` for a few steps under a
1-D FSDP mesh of 8 devices, saves parameters and optimizer state with Orbax, restores them
under a 4-device FSDP mesh and under an HSDP mesh (replica 2 × fsdp 4) by giving
``StandardCheckpointer.restore`` a target sharded for the new mesh, reconciles the coefficient
state with `optorth.reconcile_coefficients`, continues a few steps and matches the run
that never stopped to 1e-6. Every restored array carries the new mesh's sharding. The example
of the docs section "Restoring under a different mesh" (``docs/scaling_out.md``) runs too.

The cases need 8 devices, which a process must ask for before JAX starts its backend, so in a
normal run ``test_cases_on_8_simulated_devices`` starts this file again in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the cases skip themselves in the
parent).
"""

import pathlib
import re

import _sharded_model as model
import jax
import numpy as np
import pytest
from _simulated_devices import rerun_on_devices
from jax.sharding import AxisType, Mesh

pytestmark = pytest.mark.slow

N_DEVICES = 8
BEFORE, AFTER = 3, 3  # steps before the checkpoint, steps after the restore
TOLERANCE = 1e-6
DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "scaling_out.md"
DOCS_SECTION = "## Restoring under a different mesh"
needs_devices = pytest.mark.skipif(
    jax.device_count() < N_DEVICES,
    reason="needs 8 devices; run by test_cases_on_8_simulated_devices in a subprocess")


def test_cases_on_8_simulated_devices(request):
    if jax.device_count() >= N_DEVICES:
        pytest.skip("this process has 8 devices: the cases run directly")
    rerun_on_devices(request, [__file__], timeout=900)


def _mesh(name):
    auto = AxisType.Auto
    if name == "fsdp8":
        return jax.make_mesh((8,), ("fsdp",), axis_types=(auto,))
    if name == "fsdp4":  # half the devices
        return Mesh(np.array(jax.devices()[:4]), ("fsdp",), axis_types=(auto,))
    if name == "hsdp2x4":
        return jax.make_mesh((2, 4), ("replica", "fsdp"), axis_types=(auto, auto))
    raise ValueError(name)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The checkpoint written under 8-device FSDP after BEFORE steps, and the run that goes on
    for AFTER more steps without stopping."""
    tx, mesh = model.optimizer(), _mesh("fsdp8")
    params, state = model.train(*model.fresh(tx, mesh), tx, mesh, 0, BEFORE)
    path = tmp_path_factory.mktemp("checkpoint") / "step3"
    model.save(path, params, state)
    uninterrupted = model.train(params, state, tx, mesh, BEFORE, AFTER)
    return path, jax.device_get(uninterrupted)


@needs_devices
@pytest.mark.parametrize("mesh_name", ["fsdp4", "hsdp2x4"])
def test_restore_under_another_mesh_continues_the_run(saved, mesh_name):
    path, uninterrupted = saved
    tx, mesh = model.optimizer(), _mesh(mesh_name)
    (params, state), fresh = model.restore(path, tx, mesh)
    model.assert_sharded_like((params, state), fresh, mesh)
    assert {d.id for d in params["block0"]["w_in"].sharding.device_set} == {
        d.id for d in mesh.devices.flat}

    continued = model.train(params, state, tx, mesh, BEFORE, AFTER)
    model.assert_sharded_like(continued, fresh, mesh)
    flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(continued))
    for (where, x), y in zip(flat, jax.tree.leaves(uninterrupted), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(where)
        np.testing.assert_allclose(x, y, rtol=0, atol=TOLERANCE,
                                   err_msg=jax.tree_util.keystr(where))
    # The continued steps were real steps: the parameters moved after the restore.
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         continued[0], jax.device_get(params))
    assert min(jax.tree.leaves(moved)) > 1e-4, moved


@needs_devices
def test_docs_example_runs():
    """The section's example trains, saves, restores under two meshes and checks the results
    itself (shardings and agreement with the uninterrupted run); its multi-process helper
    builds the array it is given."""
    section = DOCS.read_text().split(DOCS_SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102
    value = np.arange(32.0).reshape(8, 4)
    sharding = model.fsdp(_mesh("hsdp2x4"), 2)
    built = namespace["global_array"](value, sharding)
    assert built.sharding == sharding
    np.testing.assert_array_equal(np.asarray(built), value)
