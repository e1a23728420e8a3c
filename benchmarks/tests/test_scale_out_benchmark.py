"""The layouts, routing and bookkeeping of ``benchmarks/micro/scale_out.py`` (nothing compiled here;
``tests/test_hlo_cost.py`` checks the cost reader on compiled programs)."""

import json

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.sharding import PartitionSpec as P

import optorth
from benchmarks.micro import _scale_models as models
from benchmarks.micro import scale_out
from optorth import MatrixSpec


def test_fsdp_takes_the_largest_divisible_axis_or_the_first():
    assert models.leaf_spec((768, 2304), {"fsdp": 8}) == P(None, "fsdp")
    assert models.leaf_spec((768, 2304), {"fsdp": 8}, rule="first") == P("fsdp", None)
    assert models.leaf_spec((50257, 768), {"fsdp": 8}) == P(None, "fsdp")  # 50257 is odd
    assert models.leaf_spec((7,), {"fsdp": 2}) == P(None)
    assert models.leaf_spec((768, 2304), {"replica": 2, "fsdp": 4}) == P(None, "fsdp")


def test_tensor_axis_and_expert_axis():
    assert models.leaf_spec((768, 3072), {"fsdp": 4, "tensor": 2}) == P("tensor", "fsdp")
    assert models.leaf_spec((12, 3072), {"fsdp": 4, "tensor": 2}, vector=True) == P(None, "fsdp")
    assert models.leaf_spec((8, 768, 3072), {"fsdp": 4, "tensor": 2}, expert=True) == P(
        "fsdp", None, "tensor")
    with pytest.raises(ValueError, match="expert axis of size 8 is not divisible by fsdp=16"):
        models.leaf_spec((8, 768, 3072), {"fsdp": 16}, expert=True)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_optax_is_routed_like_optorth(name):
    model = models.MODELS[name]()
    specs = jax.tree.leaves(optorth.route(model.params, list(model.rules) or None),
                            is_leaf=lambda x: isinstance(x, MatrixSpec))
    dims = jax.tree.leaves(models.optax_dimension_numbers(model), is_leaf=lambda x: isinstance(
        x, optax.contrib.MuonDimensionNumbers))
    matrix = [s for s in specs if isinstance(s, MatrixSpec)]
    assert len(dims) == len(matrix) > 0
    assert [(d.reduction_axis, d.output_axis) for d in dims] == [
        (s.reduction, s.output) for s in matrix]
    assert model.matrix_bytes < model.param_bytes


def test_state_leaves_take_their_parameter_spec():
    params = {"w": jax.ShapeDtypeStruct((8, 16), jnp.float32),
              "b": jax.ShapeDtypeStruct((16,), jnp.float32)}
    specs = {"w": P("fsdp", None), "b": P(None)}
    tx = optorth.muon()
    state = jax.eval_shape(tx.init, params)
    state_specs = scale_out._state_specs(state, specs, params)
    pairs = zip(jax.tree.leaves(state), jax.tree.leaves(
        state_specs, is_leaf=lambda x: isinstance(x, P)), strict=True)
    shaped = [s for x, s in pairs if x.shape == (8, 16)]
    assert shaped and all(s == P("fsdp", None) for s in shaped)


def test_ratios_against_the_one_device_ideal_and_optax():
    rows = [dict(model="m", mesh="1", optimizer="optorth.muon", flops=800.0),
            dict(model="m", mesh="8", optimizer="optorth.muon", flops=150.0, temp_bytes=30),
            dict(model="m", mesh="8", optimizer="optax.contrib.muon", flops=0.0, temp_bytes=10)]
    scale_out.add_ratios(rows)
    assert rows[1]["work_ratio"] == 1.5 and rows[1]["temp_ratio"] == 3.0
    assert rows[2]["work_ratio"] is None  # no one-device row for optax here


def _row(mesh, optimizer, total_bytes, mismatches=()):
    return dict(model="m", mesh=mesh, optimizer=optimizer, flops=100.0, temp_bytes=2**20,
                counts={"all-to-all": 2.0}, bytes={"all-to-all": total_bytes},
                axis_bytes={"fsdp": total_bytes}, total_bytes=total_bytes, param_bytes=100,
                matrix_bytes=50, update_mismatches=list(mismatches), state_mismatches=[])


def test_render_merges_runs_and_lists_mismatched_leaves(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [
        _row("1", "optorth.muon", 0.0), _row("8", "optorth.muon", 30.0),
        _row("8", "optax.contrib.muon", 10.0)]) + "\n")
    second.write_text(json.dumps(_row("8", "optorth.muon", 20.0, ["w: P('x',) -> P()"])) + "\n")
    out = tmp_path / "t.md"
    scale_out.main(["--render", f"{first},{second}", "--out", str(out)])
    table = out.read_text()
    assert "| m | FSDP 8 | optorth.muon | 8.00 | 2 a2a | 0.200 | 0.400 |" in table
    assert "no: 1 updates, 0 state leaves" in table and "w: P('x',) -> P()" in table
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 3
