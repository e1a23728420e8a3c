"""Flax Linen: ``flax.training.train_state.TrainState`` with optorth optimizers.

A small CNN (two 3×3 convs, a hidden dense layer, a dense head named ``head``) learns a fixed
batch. Linen parameter paths (``Conv_0/kernel``, ``Dense_0/kernel``, ``head/kernel``) are
routed by optorth's defaults: conv kernels and the hidden kernel take the matrix path, the
head and biases the fallback.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _ready import NAMES, STATE_KINDS, UNROUTED, adamw, build, tiered
from flax.training import train_state

import optorth
from optorth import MatrixSpec

MATRIX_LEAVES = {"Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel"}
#: Learning rates for this CNN (the head is frozen, so the matrix path must do the work):
#: 5× the shared defaults, except the Frobenius-normalized family; Adafactor with a fixed step.
OVERRIDES = {name: dict(lr_scale=5.0) for name in NAMES} | {
    "auon": {}, "hybrid_auon": {}, "normalized_sgdm": {},
    "adafactor": dict(learning_rate=0.03, multiply_by_parameter_scale=False),
}


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        x = nn.relu(nn.Dense(16)(x.mean(axis=(1, 2))))
        return nn.Dense(4, name="head")(x)


@functools.cache
def _data():
    """(images, labels, initial params), built on first use: collecting this file in a worker
    that does not run it computes nothing."""
    images = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 3))
    labels = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 4)
    return images, labels, CNN().init(jax.random.PRNGKey(2), images)["params"]


def _paths(tree):
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x == "fallback" or isinstance(x, MatrixSpec))[0]
    return {optorth.matrices._paths.path_to_str(p): v for p, v in leaves}


@jax.jit
def train_step(state):
    def loss_fn(params):
        images, labels, _ = _data()
        logits = state.apply_fn({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def test_linen_paths_are_routed_by_default():
    targets = _paths(optorth.route(_data()[2]))
    assert {p for p, t in targets.items() if isinstance(t, MatrixSpec)} == MATRIX_LEAVES
    assert targets["Conv_0/kernel"] == MatrixSpec.conv() and targets["head/kernel"] == "fallback"


@pytest.mark.parametrize("name", tiered(fast=STATE_KINDS))
def test_train_state_trains_a_small_cnn(name):
    params = _data()[2]
    frozen = None if name in UNROUTED else optax.set_to_zero()
    state = train_state.TrainState.create(apply_fn=CNN().apply, params=params,
                                          tx=build(name, fallback=frozen, **OVERRIDES[name]))
    losses = []
    for _ in range(8):
        state, loss = train_step(state)
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0], losses
    assert int(state.step) == 8
    before, after = _paths(params), _paths(state.params)
    for path in before:  # frozen fallback: only the matrix path moved (Adafactor: all)
        moved = not np.array_equal(after[path], before[path])
        assert moved == (name in UNROUTED or path in MATRIX_LEAVES), path


def test_train_state_with_the_default_adamw_fallback_and_bf16_params():
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), _data()[2])
    state = train_state.TrainState.create(
        apply_fn=CNN().apply, params=params,
        tx=optorth.muon(learning_rate=0.02, fallback=adamw(1e-2), mu_dtype="float32"))
    losses = []
    for _ in range(8):
        state, loss = train_step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(state.params))
    assert all(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True))
