"""`optorth.coefficients`, `optorth.optimizers.matrix_state` and `fallback_state` read a
state wherever its parts sit, and refuse states that do not hold them."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optorth
from optorth.optimizers import fallback_state, matrix_state

PARAMS = {"w": jnp.ones((4, 8)) / 8, "b": jnp.zeros(8)}
JORDAN = [[3.4445, -4.7750, 2.0315]] * 5  # Jordan's published 5-step table


def test_coefficients_is_the_table_the_state_holds():
    np.testing.assert_allclose(optorth.coefficients(optorth.muon().init(PARAMS)), JORDAN,
                               rtol=1e-6)
    per_shape = optorth.coefficients(optorth.root().init(PARAMS))
    assert sorted(per_shape) == ["4x8"] and per_shape["4x8"].shape[1] == 3
    wrapped = optax.inject_hyperparams(optorth.muon)(learning_rate=0.02).init(PARAMS)
    np.testing.assert_allclose(optorth.coefficients(wrapped), JORDAN, rtol=1e-6)
    clipped = optorth.muon(qk_clip=optorth.QKClip(100.0)).init(PARAMS)
    np.testing.assert_allclose(optorth.coefficients(clipped), JORDAN, rtol=1e-6)


def test_coefficients_refuses_none_or_several_tables():
    with pytest.raises(ValueError, match=r"0 orthogonalize blocks.*optorth.muon"):
        optorth.coefficients(optorth.signum().init(PARAMS))
    two = optax.chain(optorth.orthogonalize(), optorth.orthogonalize("polar_express5"))
    with pytest.raises(ValueError, match=r"2 orthogonalize blocks.*coefficient_states"):
        optorth.coefficients(two.init(PARAMS))


def test_matrix_and_fallback_state_split_the_routed_leaves():
    state = optorth.muon().init(PARAMS)
    momentum = matrix_state(state)[0]
    assert isinstance(momentum, optorth.blocks.MomentumState)
    assert momentum.mu["w"].shape == (4, 8) and isinstance(momentum.mu["b"], optax.MaskedNode)
    adam = fallback_state(state)[0]
    assert isinstance(adam, optax.ScaleByAdamState)
    assert adam.mu["b"].shape == (8,) and isinstance(adam.mu["w"], optax.MaskedNode)
    assert isinstance(matrix_state(state)[1], optorth.blocks.OrthogonalizeState)


def test_matrix_state_refuses_an_unrouted_state():
    with pytest.raises(ValueError, match=r"0 partitions.*adafactor has no matrix path"):
        matrix_state(optorth.adafactor().init(PARAMS))
    with pytest.raises(ValueError, match=r"fallback_state: the state holds 0"):
        fallback_state(optax.adam(1e-3).init(PARAMS))
