"""`optorth.checkpoint.restore`: an Orbax restore whose failures name the checkpoint, the leaf
and the fix instead of raw TensorStore/Orbax text, and which is Orbax's own restore otherwise.

Each failure is produced for real: a checkpoint written by Orbax, then a data file truncated,
a metadata file overwritten, or a restore into another optimizer's state.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optorth

PARAMS = {"dense": {"kernel": jnp.arange(32.0).reshape(4, 8) / 32, "bias": jnp.zeros((8,))}}
COEFFS = "inner_states/train/inner_state/inner_states/matrix/inner_state/1/coeffs"


def _muon(steps=5):
    return optorth.muon(ns=optorth.NewtonSchulz(steps=steps))


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a 5-step Muon state after one update (non-zero momentum)."""
    tx = _muon()
    state = tx.init(PARAMS)
    _, state = tx.update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)
    path = tmp_path / "ckpt"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, state)
    return path, tx, state


def _data_files(path: pathlib.Path):
    """The array data files Orbax's OCDBT store reads (the merged ``d/`` folder)."""
    files = sorted(p for p in (path / "d").iterdir() if p.is_file())
    assert files, sorted(str(p) for p in path.rglob("*"))
    return files


def test_restore_is_orbax_restore_when_nothing_is_wrong(saved):
    path, tx, state = saved
    restored = optorth.checkpoint.restore(path, tx.init(PARAMS))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)
    abstract = optorth.checkpoint.restore(path, jax.eval_shape(tx.init, PARAMS))
    assert jax.tree.structure(abstract) == jax.tree.structure(state)


#: A refused TensorStore read leaves Orbax callbacks that run after its event loop closed.
_ORBAX_LEFTOVERS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_ORBAX_LEFTOVERS
def test_truncated_array_file_names_the_checkpoint_and_the_cause(saved):
    path, tx, _ = saved
    for file in _data_files(path):
        with open(file, "r+b") as handle:
            handle.truncate(file.stat().st_size // 2)
    with pytest.raises(ValueError, match=r"truncated or corrupted.*Restore an earlier") as info:
        optorth.checkpoint.restore(path, tx.init(PARAMS))
    message = str(info.value)
    assert str(path) in message and "tensorstore_spec" not in message
    assert "cannot be read" in message


@_ORBAX_LEFTOVERS
def test_corrupted_array_file_names_the_leaf(saved):
    path, tx, _ = saved
    for file in _data_files(path):
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"the data of leaf 'inner_states/.*' cannot be read "
                                         r"\(DATA_LOSS.*truncated or corrupted"):
        optorth.checkpoint.restore(path, tx.init(PARAMS))


@_ORBAX_LEFTOVERS
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_metadata_file(saved, damage):
    path, tx, _ = saved
    text = (path / "_METADATA").read_text()
    (path / "_METADATA").write_text("{not json" if damage == "garbage" else text[:len(text) // 2])
    with pytest.raises(ValueError, match=r"its metadata cannot be read \(JSONDecodeError.*"
                                         r"_METADATA.*truncated or corrupted") as info:
        optorth.checkpoint.restore(path, tx.init(PARAMS))
    assert str(path) in str(info.value)


def test_five_step_state_into_six_step_optimizer_names_the_table_and_the_fix(saved):
    path, five, state = saved
    six = _muon(steps=6)
    with pytest.raises(ValueError, match=rf"leaf '{COEFFS}' has shape \(5, 3\) in the checkpoint "
                                         rf"and \(6, 3\) in the target.*saved with 5 steps.*"
                                         rf"runs 6.*NewtonSchulz\(steps=5\).*override"):
        optorth.checkpoint.restore(path, six.init(PARAMS))
    # The fix the message gives works: the old structure, then the new optimizer's table.
    restored = optorth.checkpoint.restore(path, five.init(PARAMS))
    current = optorth.reconcile_coefficients(restored, six.init(PARAMS), policy="override")
    (_, coefficients), = optorth.checkpoint.coefficient_states(current)
    assert coefficients.coeffs.shape == (6, 3)
    updates, _ = six.update(jax.tree.map(jnp.ones_like, PARAMS), current, PARAMS)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_step_count_of_an_nnx_optimizer_state(tmp_path):
    from flax import nnx

    model = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
    five = nnx.Optimizer(model, _muon(), wrt=nnx.Param)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", nnx.state(five))
    restored = optorth.checkpoint.restore(tmp_path / "ckpt", nnx.state(five))
    assert jax.tree.structure(restored) == jax.tree.structure(nnx.state(five))
    six = nnx.Optimizer(model, _muon(steps=6), wrt=nnx.Param)
    with pytest.raises(ValueError, match=r"coeffs/value' has shape \(5, 3\).*saved with 5 steps"):
        optorth.checkpoint.restore(tmp_path / "ckpt", nnx.state(six))


def test_state_of_another_optimizer_structure(saved):
    path, _, _ = saved
    other = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"the checkpoint lacks \['1/0/trace/dense/bias'.*"
                                         r"another optimizer configuration"):
        optorth.checkpoint.restore(path, other.init(PARAMS))


def test_other_parameter_shapes(tmp_path):
    tx = optax.adam(1e-3)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "ckpt", tx.init(PARAMS))
    wider = {"dense": {"kernel": jnp.zeros((4, 16)), "bias": jnp.zeros((16,))}}
    with pytest.raises(ValueError, match=r"leaf '0/mu/dense/bias' has shape \(8,\) in the "
                                         r"checkpoint and \(16,\) in the target.*model size"):
        optorth.checkpoint.restore(tmp_path / "ckpt", tx.init(wider))


def test_restore_without_a_target_is_refused_and_orbax_dicts_are_explained_at_update(saved):
    path, tx, _ = saved
    with pytest.raises(ValueError, match=r"restore needs a target.*NamedTuples.*tx.init"):
        optorth.checkpoint.restore(path, None)
    with ocp.StandardCheckpointer() as ckptr:  # what Orbax alone gives without a target
        plain = ckptr.restore(path)
    with pytest.raises(ValueError, match=r"dicts or lists where this optimizer's state has "
                                         r"NamedTuples.*StandardRestore"):
        tx.update(jax.tree.map(jnp.ones_like, PARAMS), plain, PARAMS)


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        optorth.checkpoint.restore(tmp_path / "missing", optax.adam(1e-3).init(PARAMS))


def test_the_docs_example_runs(capsys):
    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "drop_in.md").read_text()
    section = page[page.index("## Restoring a checkpoint"):]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(block, "drop_in.md", "exec"), namespace)  # noqa: S102 - the docs' own code
    assert "has shape (5, 3) in the checkpoint and (6, 3)" in capsys.readouterr().out
    (_, coefficients), = optorth.checkpoint.coefficient_states(namespace["state"])
    assert coefficients.coeffs.shape == (6, 3)
