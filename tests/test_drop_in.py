"""Drop-in safety in other people's training code.

Settings that third-party trainers use (``jax_numpy_rank_promotion="raise"``, Linen boxed
parameters, learning-rate schedules, conv kernels under Adafactor) and the routing mistakes a
user never sees (rules that match nothing, an output layer on the matrix path) each get a test
here: a correct result, or a warning / error that names the leaf and the fix.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optorth
from optorth import MatrixSpec

NON_SQUARE = {"w": jnp.ones((4, 12)) + jnp.eye(4, 12), "s": jnp.ones((3, 4, 12)) + jnp.eye(4, 12),
              "b": jnp.zeros(12)}
STACKED = [("^s$", MatrixSpec.stacked())]


@pytest.mark.parametrize("name", ["muon", "turbo_muon", "root", "normuon", "adamuon",
                                  "factored_muon", "trust_region", "auon"])
def test_rank_promotion_raise_gives_the_same_update(name):
    tx = getattr(optorth, name)(rules=STACKED)
    expected, _ = tx.update(NON_SQUARE, tx.init(NON_SQUARE), NON_SQUARE)
    with jax.numpy_rank_promotion("raise"):
        got, _ = jax.jit(tx.update)(NON_SQUARE, tx.init(NON_SQUARE), NON_SQUARE)
    for key in NON_SQUARE:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gram", "standard"])
@pytest.mark.parametrize("precondition", ["frobenius", "schatten", "spectral", "aol"])
def test_newton_schulz_under_rank_promotion_raise(method, precondition):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 16))
    ns = optorth.NewtonSchulz("polar_express5", method=method, precondition=precondition)
    expected = optorth.newton_schulz(x, ns)
    with jax.numpy_rank_promotion("raise"):
        got = optorth.newton_schulz(x, ns)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
