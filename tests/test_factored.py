"""optorth.scale_by_factored_rms against optax's implementation and the paper's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth import MatrixSpec
from optorth.blocks._factored import factored_decay

RNG = np.random.default_rng(0)


def _grads(shapes, steps, scale=1.0):
    return [
        {k: jnp.asarray(scale * RNG.standard_normal(s), jnp.float32) for k, s in shapes.items()}
        for _ in range(steps)
    ]


def _run(tx, grads, params):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for g in grads:
        u, state = update(g, state, params)
        outs.append(u)
    return outs, state


def test_matches_optax_on_2d_float32():
    """Where the definitions coincide (2-D float32, both factor, offset 0) the updates agree.

    optax factors a matrix only when its second-largest axis is >= min_dim_size_to_factor
    (default 128), so optax runs with min_dim_size_to_factor=1 here. Its v_row holds the
    statistics of the smaller axis; ours holds the row statistics, so they swap when m > n.
    """
    shapes = {"wide": (24, 40), "tall": (40, 24), "square": (16, 16), "vec": (12,)}
    params = {k: jnp.zeros(s) for k, s in shapes.items()}
    grads = _grads(shapes, 8)
    ours, s_ours = _run(optorth.scale_by_factored_rms(specs="fallback"), grads, params)
    ref, s_ref = _run(optax.scale_by_factored_rms(min_dim_size_to_factor=1), grads, params)
    for u, r in zip(ours, ref, strict=True):
        for k in shapes:
            np.testing.assert_allclose(u[k], r[k], rtol=2e-5, atol=0)
    np.testing.assert_allclose(s_ours.v_row["wide"], s_ref.v_row["wide"], rtol=1e-6)
    np.testing.assert_allclose(s_ours.v_row["tall"], s_ref.v_col["tall"], rtol=1e-6)
    np.testing.assert_allclose(s_ours.v_col["tall"], s_ref.v_row["tall"], rtol=1e-6)
    np.testing.assert_allclose(s_ours.v["vec"], s_ref.v["vec"], rtol=1e-6)


def test_paper_equations_numpy():
    """R, C, V̂ and U of the paper, written out in float64 NumPy, for 6 steps."""
    g_list = [RNG.standard_normal((6, 10)) for _ in range(6)]
    tx = optorth.scale_by_factored_rms(specs="fallback")
    state = tx.init(jnp.zeros((6, 10)))
    r, c = np.zeros(6), np.zeros(10)
    for t, g in enumerate(g_list, start=1):
        beta = 1.0 - t**-0.8
        r = beta * r + (1 - beta) * (g**2 + 1e-30).mean(axis=1)
        c = beta * c + (1 - beta) * (g**2 + 1e-30).mean(axis=0)
        v_hat = np.outer(r, c) / r.mean()
        u, state = tx.update(jnp.asarray(g, jnp.float32), state)
        np.testing.assert_allclose(u, g / np.sqrt(v_hat), rtol=2e-5)
    np.testing.assert_allclose(state.v_row, r, rtol=1e-5)


def test_state_is_o_m_plus_n_and_batch_axes_respected():
    """Stacked (L, m, n): L·(m + n) statistics, each slice updated as its own matrix.

    optax factors the two largest axes of the leaf (here L=40 and n=12), mixing matrices.
    """
    shapes = {"stack": (40, 8, 12)}
    params = {"stack": jnp.zeros((40, 8, 12))}
    grads = _grads(shapes, 3)
    tx = optorth.scale_by_factored_rms(specs="fallback")
    (_, _, last), state = _run(tx, grads, params)
    assert state.v_row["stack"].shape == (40, 8) and state.v_col["stack"].shape == (40, 12)
    assert isinstance(state.v["stack"], optax.MaskedNode)
    ref_state = optax.scale_by_factored_rms(min_dim_size_to_factor=1).init(params)
    assert ref_state.v_row["stack"].shape == (8, 12)  # optax: reduced over L=40, not a matrix
    single = optorth.scale_by_factored_rms(specs="fallback")
    for i in (0, 17, 39):
        sl = [{"w": g["stack"][i]} for g in grads]
        (_, _, u_i), _ = _run(single, sl, {"w": jnp.zeros((8, 12))})
        np.testing.assert_allclose(last["stack"][i], u_i["w"], rtol=1e-5)


def test_scalars_vectors_and_small_matrices_unfactored():
    params = {"s": jnp.zeros(()), "v": jnp.zeros(5), "m": jnp.zeros((3, 7))}
    state = optorth.scale_by_factored_rms(min_dim_size_to_factor=4).init(params)
    assert state.v["s"].shape == () and state.v["v"].shape == (5,)
    assert state.v["m"].shape == (3, 7)  # min(3, 7) < 4
    g = {"s": jnp.asarray(2.0), "v": jnp.arange(1.0, 6.0), "m": jnp.ones((3, 7))}
    u, _ = optorth.scale_by_factored_rms(min_dim_size_to_factor=4).update(g, state)
    np.testing.assert_allclose(u["v"], np.ones(5), rtol=1e-6)  # step 1: G / sqrt(G²)


def test_decay_schedule_and_offset_finite():
    """β̂2_t = 1 − t^(−0.8); with an offset the schedule restarts and stays finite.

    optax (defect 8): t = count + 1 − offset ≤ 0 at the first step → non-finite update.
    """
    counts = jnp.arange(6)
    np.testing.assert_allclose(factored_decay(counts), 1 - (np.arange(6) + 1.0) ** -0.8, rtol=1e-6)
    np.testing.assert_array_equal(factored_decay(counts, step_offset=3)[:4], 0.0)
    assert float(factored_decay(jnp.asarray(10_000_000), beta2=0.999)) == pytest.approx(0.999)
    g = {"w": jnp.asarray(RNG.standard_normal((16, 24)), jnp.float32)}
    params = {"w": jnp.zeros((16, 24))}
    ref = optax.scale_by_factored_rms(min_dim_size_to_factor=1, step_offset=5)
    u_ref, _ = ref.update(g, ref.init(params), params)
    assert not np.isfinite(np.asarray(u_ref["w"])).all()
    ours = optorth.scale_by_factored_rms(step_offset=5)
    u, _ = ours.update(g, ours.init(params))
    plain = optorth.scale_by_factored_rms()
    u0, _ = plain.update(g, plain.init(params))
    assert np.isfinite(np.asarray(u["w"])).all()
    np.testing.assert_allclose(u["w"], u0["w"], rtol=1e-6)  # steps before the offset: β̂2 = 0


@pytest.mark.parametrize("magnitude, expected", [(1e4, 1.0), (1e-20, 1e-5)])
def test_bf16_params_float32_stats_no_overflow(magnitude, expected):
    """bf16 in, bf16 out, float32 statistics. |G| = 1e4: U = ±1. |G| = 1e-20: G² ≪ ε1 = 1e-30,
    so V̂ ≈ 1e-30 and U ≈ G / 1e-15 = ±1e-5. optax keeps bf16 statistics."""
    signs = np.sign(RNG.standard_normal((16, 24))) * magnitude
    params = {"w": jnp.zeros((16, 24), jnp.bfloat16), "b": jnp.zeros(24, jnp.bfloat16)}
    g = {"w": jnp.asarray(signs, jnp.bfloat16), "b": jnp.asarray(signs[0], jnp.bfloat16)}
    tx = optorth.scale_by_factored_rms()
    state = tx.init(params)
    assert {x.dtype for x in jax.tree.leaves(state)[1:]} == {jnp.dtype(jnp.float32)}
    for _ in range(3):
        u, state = tx.update(g, state)
    for k in ("w", "b"):
        assert u[k].dtype == jnp.bfloat16
        np.testing.assert_allclose(np.abs(np.asarray(u[k], np.float32)), expected, rtol=1e-2)
    ref_state = optax.scale_by_factored_rms(min_dim_size_to_factor=1).init(params)
    assert ref_state.v_row["w"].dtype == jnp.bfloat16


def test_matrix_specs_factor_each_matrix():
    """A conv spec factors (kh·kw·cin) × cout; a head split gives per-head statistics that
    equal the factored statistics of each head's matrix on its own."""
    conv, heads = MatrixSpec.conv(), MatrixSpec((0,), (1,), heads=(1, 4))
    params = {"conv": jnp.zeros((3, 3, 4, 8)), "attn": jnp.zeros((16, 32)), "b": jnp.zeros(8)}
    specs = {"conv": conv, "attn": heads, "b": "fallback"}
    tx = optorth.scale_by_factored_rms(specs=specs)
    state = tx.init(params)
    assert state.v_row["conv"].shape == (1, 36) and state.v_col["conv"].shape == (1, 8)
    assert state.v_row["attn"].shape == (4, 16) and state.v_col["attn"].shape == (4, 8)
    assert state.v["b"].shape == (8,)
    g = {k: jnp.asarray(RNG.standard_normal(v.shape), jnp.float32) for k, v in params.items()}
    u, _ = tx.update(g, state)
    single = optorth.scale_by_factored_rms()
    for h in range(4):
        cols = slice(8 * h, 8 * (h + 1))
        u_h, _ = single.update(g["attn"][:, cols], single.init(g["attn"][:, cols]))
        np.testing.assert_allclose(u["attn"][:, cols], u_h, rtol=1e-5)
    flat = g["conv"].reshape(36, 8)
    u_c, _ = single.update(flat, single.init(flat))
    np.testing.assert_allclose(u["conv"].reshape(36, 8), u_c, rtol=1e-5)


def test_rejects_bad_specs_tree():
    tx = optorth.scale_by_factored_rms(specs={"a": None})
    with pytest.raises(ValueError,
                       match=r"scale_by_factored_rms: no spec for leaf 'b' of shape \(3, 4\)"):
        tx.init({"a": jnp.zeros((2, 2)), "b": jnp.zeros((3, 4))})
    bad = optorth.scale_by_factored_rms(specs={"w": MatrixSpec((0,), (2,))})
    with pytest.raises(ValueError, match="do not exist"):
        bad.init({"w": jnp.zeros((3, 4))})


def test_default_specs_are_the_default_routing():
    """specs=None is optorth.route: a hidden kernel is one (1, m, n) matrix, an embedding (a
    fallback leaf) is factored over its own last two axes, a rank-3 leaf must be ruled."""
    params = {"embed": jnp.zeros((10, 4)), "w": jnp.zeros((4, 8)), "b": jnp.zeros(8)}
    state = optorth.scale_by_factored_rms().init(params)
    assert state.v_row["w"].shape == (1, 4) and state.v_row["embed"].shape == (10,)
    assert state.v["b"].shape == (8,)
    with pytest.raises(ValueError, match=r"scale_by_factored_rms: Leaf 'stack'.*MatrixSpec"):
        optorth.scale_by_factored_rms().init({"stack": jnp.zeros((3, 4, 8))})
    prefix = optorth.scale_by_factored_rms(specs="fallback").init({"stack": jnp.zeros((3, 4, 8))})
    assert prefix.v_row["stack"].shape == (3, 4)


def test_max_decay_is_the_deprecated_name_of_beta2():
    params = {"w": jnp.ones((6, 4))}
    grads = {"w": jnp.asarray(np.arange(24.0).reshape(6, 4) - 11.5, jnp.float32)}
    with pytest.warns(DeprecationWarning, match=r"max_decay= is deprecated; pass beta2="):
        old = optorth.scale_by_factored_rms(max_decay=0.5)
    new = optorth.scale_by_factored_rms(beta2=0.5)
    state_old, state_new = old.init(params), new.init(params)
    for _ in range(3):
        got, state_old = old.update(grads, state_old)
        want, state_new = new.update(grads, state_new)
    np.testing.assert_array_equal(got["w"], want["w"])
