"""The compiled-HLO cost reader of ``benchmarks/micro/_hlo.py`` on programs with known costs.

Dot FLOPs of matmul loops (2·m·n·k per product times the iterations, nested loops multiplied,
the trip count read off the loop condition when XLA's ``known_trip_count`` is removed), the
three spellings of replica groups, and the bytes and mesh axes of each collective under
``shard_map`` on a 2 × 4 mesh of simulated devices (that case reruns this file in a
subprocess with 8 devices, as ``tests/test_sharding.py`` does).
"""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks.micro._hlo import analyze, bytes_per_device, device_groups

M, N, STEPS = 16, 32, 7


def _matmul_loop(steps):
    def f(a, b):
        return jax.lax.fori_loop(0, steps, lambda i, x: x @ b, a)
    return f


def _hlo(f, *shapes):
    args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    return jax.jit(f).lower(*args).compile().as_text()


def test_loop_of_matmuls_counts_every_iteration():
    cost = analyze(_hlo(_matmul_loop(STEPS), (M, N), (N, N)))
    assert cost.dot_flops == STEPS * 2 * M * N * N
    assert cost.unknown_trip_loops == []


def test_nested_loops_multiply():
    def f(a, b):
        inner = _matmul_loop(4)
        return jax.lax.fori_loop(0, 3, lambda i, x: inner(x, b) @ b, a)

    assert analyze(_hlo(f, (M, N), (N, N))).dot_flops == 3 * (4 + 1) * 2 * M * N * N


def test_scan_and_batched_dot():
    def f(xs, b):  # a scan over 5 steps of a (2, M, N) × (2, N, N) batched product
        return jax.lax.scan(lambda c, x: (c, jnp.einsum("bmn,bnk->bmk", x, b)), 0.0, xs)[1]

    assert analyze(_hlo(f, (5, 2, M, N), (2, N, N))).dot_flops == 5 * 2 * 2 * M * N * N


def test_trip_count_read_off_the_condition():
    hlo = _hlo(_matmul_loop(STEPS), (M, N), (N, N))
    stripped = re.sub(r',?\s*"known_trip_count":\{"n":"\d+"\}', "", hlo)
    assert "known_trip_count" not in stripped
    assert analyze(stripped).dot_flops == STEPS * 2 * M * N * N
    unknown = re.sub(r"constant\(7\)", "parameter(9)", stripped)  # the bound is no constant
    cost = analyze(unknown)
    assert cost.unknown_trip_loops and cost.dot_flops == 2 * M * N * N


def test_replica_group_spellings():
    assert device_groups("replica_groups={{0,2},{1,3}}, x=1", 4) == [[0, 2], [1, 3]]
    assert device_groups("replica_groups={}, to_apply=%r", 4) == [[0, 1, 2, 3]]
    assert device_groups("replica_groups=[2,4]<=[8], x", 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert device_groups("replica_groups=[4,2]<=[2,4]T(1,0), x", 8) == [
        [0, 4], [1, 5], [2, 6], [3, 7]]
    # The mesh form XLA prints for jax meshes: a (2, 4) mesh reindexed as (4, 1, 2) through a
    # transposed device list, grouped over its first axis, is the groups along the mesh's 4.
    text = ("replica_groups=mesh['axis_0'=4,'axis_1'=1,'axis_2'=2], device_ids=([2,4]T(1,0)) "
            "{'axis_0'}, use_global_device_ids=true")
    assert sorted(map(sorted, device_groups(text, 8))) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    text = "replica_groups=mesh['axis_0'=2,'axis_1'=1,'axis_2'=4] {'axis_0'}, x"
    assert sorted(map(sorted, device_groups(text, 8))) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    # sub-axis a:(1)2 of an axis of 8 = its major half: devices i and i + 4
    text = "replica_groups=mesh['a'=8] {'a':(1)2}, x"
    assert sorted(map(sorted, device_groups(text, 8))) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    text = "source_target_pairs={{0,1},{1,0}}, x"
    assert device_groups(text, 2) == [[0, 1], [1, 0]]


def test_bytes_per_device_formulas():
    assert bytes_per_device("all-to-all", 800, 4) == 600
    assert bytes_per_device("all-gather", 100, 4) == 300  # 3/4 of the 400-byte result
    assert bytes_per_device("all-reduce", 800, 4) == 1200
    assert bytes_per_device("reduce-scatter", 800, 4) == 600
    assert bytes_per_device("collective-permute", 800, 2) == 800
    assert bytes_per_device("all-to-all", 800, 1) == 0


# ----- collectives on a 2 × 4 mesh ------------------------------------------------------------
BLOCK = 8 * 16 * 4  # bytes of each device's (8, 16) float32 block of a (16, 64) array
# (collective under shard_map, kind, executions, bytes per device, bytes crossing r, f)
CASES = {
    "all_to_all over f": (lambda b: jax.lax.all_to_all(b, "f", 0, 0, tiled=True),
                          "all-to-all", 1, 3 / 4 * BLOCK, 0, 3 / 4 * BLOCK),
    "all_gather over r": (lambda b: jax.lax.all_gather(b, "r", tiled=True)[:8],
                          "all-gather", 1, BLOCK, BLOCK, 0),
    # 8 devices, 7 peers: 4 differ on r, 6 on f, each receiving 1/7 of 2·7/8 of the block
    "psum over r, f": (lambda b: jax.lax.psum(b, ("r", "f")), "all-reduce", 1,
                       2 * 7 / 8 * BLOCK, 4 / 7 * 2 * 7 / 8 * BLOCK, 6 / 7 * 2 * 7 / 8 * BLOCK),
    "psum_scatter over f": (lambda b: jnp.tile(jax.lax.psum_scatter(
        b, "f", scatter_dimension=1, tiled=True), (1, 4)), "reduce-scatter", 1,
        3 / 4 * BLOCK, 0, 3 / 4 * BLOCK),
    "ppermute over r, 3 times in a loop": (lambda b: jax.lax.fori_loop(
        0, 3, lambda i, y: jax.lax.ppermute(y, "r", [(0, 1), (1, 0)]), b),
        "collective-permute", 3, 3 * BLOCK, 3 * BLOCK, 0),
}

needs_devices = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices; run by "
                                   "test_collectives_on_8_simulated_devices in a subprocess")


@pytest.mark.slow  # a fresh process with 8 devices and 5 compiles: ~10 s idle, ~35 s loaded
def test_collectives_on_8_simulated_devices():
    if jax.device_count() >= 8:
        pytest.skip("this process has 8 devices: the cases run directly")
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=8".strip())
    result = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-x", "-p",
                             "no:cacheprovider", "-k", "collective_bytes"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@needs_devices
@pytest.mark.parametrize("case", list(CASES))
def test_collective_bytes(case):
    fn, kind, runs, moved, across_r, across_f = CASES[case]
    mesh = jax.make_mesh((2, 4), ("r", "f"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
    x = jax.ShapeDtypeStruct((16, 64), jnp.float32, sharding=NamedSharding(mesh, P("r", "f")))
    f = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P("r", "f"), out_specs=P("r", "f")))
    cost = analyze(f.lower(x).compile().as_text(), dict(mesh.shape))
    assert {k: v for k, v in cost.counts.items() if v} == {kind: runs}
    assert [(c.kind, c.executions) for c in cost.collectives] == [(kind, runs)]
    assert "shard_map" in cost.collectives[0].source
    np.testing.assert_allclose(
        [cost.bytes[kind], cost.total_bytes, cost.axis_bytes["r"], cost.axis_bytes["f"]],
        [moved, moved, across_r, across_f])
