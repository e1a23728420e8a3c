"""optorth.contrib.sqrt_scaling_rule against the paper's rule written out, and bad inputs."""

import math

import numpy as np
import optax
import pytest

from optorth.contrib import ScaledHyperparams, sqrt_scaling_rule


def _numpy_rule(kappa, lr, b1, b2, eps):
    """Malladi et al. 2022, square-root scaling rule for batch size × κ."""
    root = np.sqrt(np.float64(kappa))
    return (lr * root, 1 - kappa * (1 - np.float64(b1)), 1 - kappa * (1 - np.float64(b2)),
            eps / root)


@pytest.mark.parametrize("kappa", [0.25, 0.5, 1, 2, 4, 8, 10, 16, 64, 100, 1000])
def test_matches_the_rule(kappa):
    lr, b1, b2, eps = 3e-4, 0.9, 0.999, 1e-8
    if kappa > 1 / (1 - b1):
        b1 = 0.999
    got = sqrt_scaling_rule(kappa, learning_rate=lr, b1=b1, b2=b2, eps=eps)
    assert isinstance(got, ScaledHyperparams)
    np.testing.assert_allclose(got, _numpy_rule(kappa, lr, b1, b2, eps), rtol=1e-5, atol=1e-12)


def test_kappa_one_is_identity_and_composition():
    h = sqrt_scaling_rule(1, learning_rate=1e-3, b1=0.9, b2=0.99, eps=1e-8)
    np.testing.assert_allclose(h, (1e-3, 0.9, 0.99, 1e-8), rtol=1e-12)
    twice = sqrt_scaling_rule(2, **sqrt_scaling_rule(2, learning_rate=1e-3, b1=0.9, b2=0.99,
                                                     eps=1e-8)._asdict())
    np.testing.assert_allclose(twice, sqrt_scaling_rule(4, learning_rate=1e-3, b1=0.9, b2=0.99,
                                                        eps=1e-8), rtol=1e-9)


def test_largest_admissible_kappa_gives_zero_decay():
    h = sqrt_scaling_rule(10, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8)
    assert h.b1 == 0.0 and math.isclose(h.b2, 0.99)


def test_schedule_is_scaled_pointwise():
    schedule = optax.linear_schedule(1e-3, 0.0, 100)
    h = sqrt_scaling_rule(4, learning_rate=schedule, b1=0.9, b2=0.999, eps=1e-8)
    for step in (0, 10, 50):
        np.testing.assert_allclose(h.learning_rate(step), 2 * schedule(step), rtol=1e-6)


def test_feeds_optax_adam():
    h = sqrt_scaling_rule(4, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8)
    assert isinstance(optax.adam(**h._asdict()), optax.GradientTransformation)


def test_too_large_kappa_names_the_bound():
    with pytest.raises(ValueError, match=r"kappa=11.0 sends b1=0.9 .* < 0; the largest "
                                         r"admissible kappa for b1=0.9, b2=0.999 is 10\b"):
        sqrt_scaling_rule(11, learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8)
    with pytest.raises(ValueError, match=r"sends b2=0.95 .* largest admissible kappa .* is 20"):
        sqrt_scaling_rule(30, learning_rate=1e-3, b1=0.99, b2=0.95, eps=1e-8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kappa=0), r"sqrt_scaling_rule: kappa must be a finite number > 0; got 0"),
    (dict(kappa=-2), r"sqrt_scaling_rule: kappa must be a finite number > 0"),
    (dict(kappa=float("inf")), r"sqrt_scaling_rule: kappa must be a finite number > 0"),
    (dict(kappa=2, b1=1.0), r"sqrt_scaling_rule: b1 must lie in \[0, 1\); got 1.0"),
    (dict(kappa=2, b2=-0.1), r"sqrt_scaling_rule: b2 must lie in \[0, 1\)"),
    (dict(kappa=2, eps=-1.0), r"sqrt_scaling_rule: eps must be a finite number >= 0"),
    (dict(kappa=2, learning_rate=-1.0), r"sqrt_scaling_rule: learning_rate must be a finite"),
])
def test_bad_inputs(kwargs, match):
    args = dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8) | kwargs
    with pytest.raises(ValueError, match=match):
        sqrt_scaling_rule(**args)
