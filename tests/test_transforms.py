"""orthogonalize, dualize, scale_by_shape, soft_threshold and momentum, per matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth import MatrixSpec


def _normal(shape, seed=0, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape)


def _apply(tx, updates):
    state = tx.init(updates)
    out, new_state = tx.update(updates, state)
    return out, new_state


def test_orthogonalize_approaches_the_polar_factor():
    x = {"w": _normal((16, 32))}
    out, state = _apply(optorth.orthogonalize("you6"), x)
    np.testing.assert_allclose(out["w"], optorth.ns.polar_numpy(x["w"]), atol=0.02)
    assert state.coeffs.shape == (6, 3) and state.coeffs.dtype == jnp.float32
    sv = np.linalg.svd(np.asarray(_apply(optorth.orthogonalize(), x)[0]["w"]), compute_uv=False)
    assert 0.6 < sv.min() and sv.max() < 1.2  # Jordan's band


def test_coefficients_are_read_from_the_state():
    x = {"w": _normal((8, 16))}
    tx = optorth.orthogonalize("jordan")
    state = tx.init(x)
    np.testing.assert_allclose(state.coeffs, [[3.4445, -4.7750, 2.0315]] * 5)
    # A table changed in place, as online learning changes it (the fingerprint stays the
    # block's own), drives the iteration; a table that does not orthogonalize is refused.
    table = jnp.asarray([[3.0, -3.2, 1.2]] * 5)
    out, _ = tx.update(x, state._replace(coeffs=table))
    expected = optorth.newton_schulz(x["w"], "jordan", coeffs=table)
    np.testing.assert_allclose(out["w"], expected, rtol=1e-5, atol=1e-7)
    identity = state._replace(coeffs=jnp.asarray([[1.0, 0.0, 0.0]] * 5))
    with pytest.raises(ValueError, match=r"no gain"):
        tx.update(x, identity)


def test_per_shape_schedule_keeps_a_table_per_matrix_shape():
    x = {"a": _normal((8, 16)), "b": _normal((16, 8), 1), "c": _normal((4, 4), 2)}
    state = optorth.orthogonalize("root").init(x)
    assert sorted(state.coeffs) == ["4x4", "8x16"]
    assert state.coeffs["8x16"].shape == (5, 3)


def test_stacked_weights_equal_separate_layers():
    w = _normal((3, 8, 16)) * jnp.asarray([1.0, 1e-3, 30.0])[:, None, None]
    stacked = optorth.orthogonalize(specs={"w": MatrixSpec.stacked()}, adaptive=True)
    out, _ = _apply(stacked, {"w": w})
    single = optorth.orthogonalize(adaptive=True)
    for layer in range(3):
        expected, _ = _apply(single, {"w": w[layer]})
        np.testing.assert_allclose(out["w"][layer], expected["w"], rtol=2e-5, atol=1e-7)
    # Adaptive scaling is per matrix: each layer's scale tracks its own nuclear norm.
    scales = jnp.linalg.norm(out["w"], axis=(-2, -1))
    assert float(scales[2] / scales[1]) > 1e4


def test_conv_and_heads_equal_a_manual_reshape():
    kernel = _normal((3, 3, 4, 8))
    out, _ = _apply(optorth.orthogonalize(specs={"k": MatrixSpec.conv()}), {"k": kernel})
    manual, _ = _apply(optorth.orthogonalize(), {"k": kernel.reshape(36, 8)})
    np.testing.assert_allclose(out["k"].reshape(36, 8), manual["k"], rtol=1e-5, atol=1e-6)

    qkv = _normal((8, 3 * 2 * 4), 1)  # fused QKV, 2 heads of 4 per projection
    spec = MatrixSpec(blocks=(1, (8, 8, 8)), heads=(1, 2))
    out, _ = _apply(optorth.orthogonalize(specs={"w": spec}), {"w": qkv})
    for block in range(3):
        for head in range(2):
            cols = slice(8 * block + 4 * head, 8 * block + 4 * head + 4)
            manual, _ = _apply(optorth.orthogonalize(), {"w": qkv[:, cols]})
            np.testing.assert_allclose(out["w"][:, cols], manual["w"], rtol=1e-5, atol=1e-6)


def test_default_specs_route_and_a_spec_that_does_not_fit_names_the_path():
    """specs=None is optorth.route: a bias passes through; an explicit MatrixSpec on a
    vector raises naming the leaf and its shape."""
    with pytest.raises(ValueError, match=r"'layer/bias' of shape \(4,\).*do not exist"):
        optorth.orthogonalize(specs={"layer": {"bias": MatrixSpec()}}).init(
            {"layer": {"bias": jnp.zeros(4)}})
    x = {"w": _normal((4, 8)), "b": jnp.ones(8)}
    for specs in (None, optorth.route):
        out, _ = _apply(optorth.orthogonalize(specs=specs), x)
        np.testing.assert_array_equal(out["b"], jnp.ones(8))
        alone, _ = _apply(optorth.orthogonalize(), {"w": x["w"]})
        np.testing.assert_array_equal(out["w"], alone["w"])


def test_static_steps_are_enforced():
    def init(steps):
        tx = optorth.orthogonalize(optorth.NewtonSchulz(steps=steps))
        return tx.init({"w": jnp.ones((2, 2))})

    with pytest.raises(ValueError, match="static_args"):
        jax.jit(init)(5)
    assert init(np.int64(3)).coeffs.shape == (3, 3)
    for bad in (2.5, 0, jnp.asarray(3)):  # 2.5 would silently run 2 steps
        with pytest.raises(ValueError, match="steps must be a positive int"):
            init(bad)


@pytest.mark.parametrize("norm", ["frobenius", "sign", "row", "column", "auon", "hybrid_auon"])
def test_dualize_applies_the_lmo_per_matrix(norm):
    w = _normal((2, 6, 10)) * jnp.asarray([1.0, 20.0])[:, None, None]
    tx = optorth.dualize(norm, specs={"w": MatrixSpec.stacked()}, adaptive=True)
    out, _ = _apply(tx, {"w": w})
    lmo, dual = optorth.norms.NORMS[norm]().lmo, optorth.norms.NORMS[norm]().dual
    for layer in range(2):
        expected = lmo(w[layer]) * dual(w[layer])
        np.testing.assert_allclose(out["w"][layer], expected, rtol=2e-5, atol=1e-6)


def test_dualize_spectral_is_orthogonalize_and_bad_options_raise():
    x = {"w": _normal((4, 8))}
    spectral, _ = _apply(optorth.dualize(optorth.norms.Spectral(optorth.NewtonSchulz("you"))), x)
    direct, _ = _apply(optorth.orthogonalize("you"), x)
    np.testing.assert_array_equal(spectral["w"], direct["w"])
    with pytest.raises(ValueError, match=r"AuON: gamma must be a finite number > 0; got 0"):
        optorth.dualize(optorth.norms.AuON(gamma=0))
    with pytest.raises(ValueError, match=r"Expected an optorth.norms.Norm .*got 'max'"):
        optorth.dualize("max")


@pytest.mark.parametrize("convention,wide,tall", [
    ("keller", 2.0, 1.0),                                  # sqrt(max(1, n/m))
    ("consistent_rms", 0.2 * np.sqrt(32), 0.2 * np.sqrt(32)),  # 0.2·sqrt(max(m, n))
    ("spectral", 2.0, 0.5),                                # sqrt(n/m)
])
def test_scale_by_shape_conventions(convention, wide, tall):
    x = {"wide": jnp.ones((8, 32)), "tall": jnp.ones((32, 8)),
         "heads": jnp.ones((8, 64))}  # 2 heads of 8×32 each
    specs = {"wide": MatrixSpec(), "tall": MatrixSpec(), "heads": MatrixSpec(heads=(1, 2))}
    out, _ = _apply(optorth.scale_by_shape(convention, specs=specs), x)
    np.testing.assert_allclose(out["wide"], wide)
    np.testing.assert_allclose(out["tall"], tall)
    np.testing.assert_allclose(out["heads"], wide)  # per head, not per 8×64 leaf
    with pytest.raises(ValueError, match=r"convention='moonlight'; expected one of"):
        optorth.scale_by_shape("moonlight")


def test_soft_threshold_clips_each_matrix_at_its_quantile():
    w = _normal((3, 8, 16)) * jnp.asarray([1.0, 1e-3, 100.0])[:, None, None]
    out, _ = _apply(optorth.soft_threshold(0.9, specs={"w": MatrixSpec.stacked()}), {"w": w})
    for layer in range(3):
        x = np.asarray(w[layer], np.float64)
        eps = np.quantile(np.abs(x), 0.9)
        np.testing.assert_allclose(out["w"][layer], np.clip(x, -eps, eps), rtol=1e-6)
        outliers = x - np.asarray(out["w"][layer])
        np.testing.assert_allclose(outliers, np.sign(x) * np.maximum(np.abs(x) - eps, 0),
                                   rtol=1e-5, atol=1e-7 * np.abs(x).max())
        assert np.mean(np.abs(outliers) > 0) == pytest.approx(0.1, abs=0.01)


def _run_momentum(tx, grads):
    state = tx.init(grads[0])
    outs = []
    for g in grads:
        out, state = tx.update(g, state)
        outs.append(out)
    return outs, state


def test_momentum_conventions_match_their_formulas():
    grads = [{"w": _normal((3, 4), seed)} for seed in range(4)]
    beta = 0.9
    ema, _ = _run_momentum(optorth.scale_by_momentum(beta), grads)
    sgd, _ = _run_momentum(optorth.scale_by_momentum(beta, convention="sgd"), grads)
    trace, _ = _run_momentum(optax.trace(beta, nesterov=True), grads)
    debiased, _ = _run_momentum(optorth.scale_by_momentum(beta, bias_correction=True), grads)
    warm, _ = _run_momentum(optorth.scale_by_momentum(beta, nesterov=False, warm_start=True),
                            grads)
    m_ema, m_sgd, m_warm = 0.0, 0.0, None
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g["w"])
        m_ema = beta * m_ema + (1 - beta) * g
        m_sgd = beta * m_sgd + g
        m_warm = g if m_warm is None else beta * m_warm + (1 - beta) * g
        np.testing.assert_allclose(ema[t - 1]["w"], (1 - beta) * g + beta * m_ema, rtol=1e-5)
        np.testing.assert_allclose(sgd[t - 1]["w"], g + beta * m_sgd, rtol=1e-5)
        np.testing.assert_allclose(sgd[t - 1]["w"], trace[t - 1]["w"], rtol=1e-6)
        nadam = (beta * m_ema / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta ** t))
        np.testing.assert_allclose(debiased[t - 1]["w"], nadam, rtol=1e-5)
        np.testing.assert_allclose(warm[t - 1]["w"], m_warm, rtol=1e-5)


def test_momentum_state_dtype_and_errors():
    grads = [{"w": jnp.ones((2, 2), jnp.bfloat16)}]
    _, state = _run_momentum(optorth.scale_by_momentum(mu_dtype="float32"), grads)
    assert state.mu["w"].dtype == jnp.float32 and state.count == 1
    with pytest.raises(ValueError, match="'ema' convention only"):
        optorth.scale_by_momentum(convention="sgd", bias_correction=True)
    with pytest.raises(ValueError, match="expected one of"):
        optorth.scale_by_momentum(convention="heavy_ball")
