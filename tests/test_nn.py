"""optorth.nn as a whole: every adapter through adapt/merge, optimizers, routing, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optorth
from optorth.nn import AdapterParam, Frozen, GivensLinear, HRALinear, OFTLinear

WIDTH = 16

ADAPTERS = {
    "oft": lambda layer: OFTLinear(layer, block_size=4),
    "hra": lambda layer: HRALinear(layer, rank=4, rngs=nnx.Rngs(3)),
    "givens": lambda layer: GivensLinear(layer),
    "qgoft": lambda layer: GivensLinear(layer, quasi=True),
}


class Net(nnx.Module):
    """Two hidden dense layers in an nnx.List, a gain and a head: the shapes adapters meet."""

    def __init__(self, rngs):
        self.hidden = nnx.List([nnx.Linear(WIDTH, WIDTH, rngs=rngs) for _ in range(2)])
        self.norm = nnx.RMSNorm(WIDTH, rngs=rngs)
        self.head = nnx.Linear(WIDTH, 3, rngs=rngs)

    def __call__(self, x):
        for layer in self.hidden:
            x = jnp.tanh(layer(x))
        return self.head(self.norm(x))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((32, WIDTH)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 32))
    return x, y


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def _adapted(name, seed=0):
    model = Net(nnx.Rngs(seed))
    paths = optorth.nn.adapt(model, ADAPTERS[name], exclude="head")
    assert paths == ["hidden/0", "hidden/1"]
    return model


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapted_model_starts_at_the_pretrained_function(name):
    x, _ = _data()
    np.testing.assert_array_equal(_adapted(name)(x), Net(nnx.Rngs(0))(x))


@pytest.mark.parametrize("name", ADAPTERS)
def test_training_the_adapters_moves_only_adapter_parameters_and_merge_keeps_the_function(
        name):
    model = _adapted(name)
    frozen_before = jax.tree.map(np.asarray, nnx.state(model, Frozen))
    params_before = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(AdapterParam)))
    optimizer = nnx.Optimizer(model, optorth.muon(0.02), wrt=AdapterParam)
    x, y = _data()

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(_loss, argnums=nnx.DiffState(0, AdapterParam))(
            model, x, y)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(8)]
    assert losses[-1] < losses[0]
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model, Frozen), frozen_before)
    jax.tree.map(np.testing.assert_array_equal,
                 nnx.state(model, nnx.Not(AdapterParam)), params_before)

    adapted_out = model(x)
    assert optorth.nn.merge(model) == ["hidden/0", "hidden/1"]
    assert all(type(layer) is nnx.Linear for layer in model.hidden)
    assert not jax.tree.leaves(nnx.state(model, Frozen))
    assert not jax.tree.leaves(nnx.state(model, AdapterParam))
    np.testing.assert_allclose(model(x), adapted_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_parameters_take_the_fallback_and_frozen_bases_are_not_params(name):
    model = _adapted(name)
    params = nnx.state(model, nnx.Param)
    decisions = {d.path: d for d in optorth.matrices.routing_decisions(params)[0]}
    adapter_paths = [p for p in decisions if p.split("/")[-1].split("_")[0]
                     in ("oft", "hra", "givens")]
    assert len(adapter_paths) == 2
    for path in adapter_paths:
        assert decisions[path].target == "fallback", decisions[path]
        assert decisions[path].reason in ("rank 1", f"adapter parameter {path.split('/')[-1]!r}")
    assert not any("base/kernel" in path for path in decisions)  # frozen: not an nnx.Param
    assert decisions["head/kernel"].target == "fallback"  # head name, as before


def test_full_parameter_optimizer_never_sees_the_frozen_base():
    model = _adapted("oft")
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x, y = _data()
    grads = nnx.grad(_loss, argnums=nnx.DiffState(0, nnx.Param))(model, x, y)
    before = jax.tree.map(np.asarray, nnx.state(model, Frozen))
    optimizer.update(model, grads)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(model, Frozen), before)


def test_adapt_skips_layers_already_adapted_and_merge_without_adapters_is_a_no_op():
    model = _adapted("givens")
    with pytest.raises(ValueError, match="no nnx.Linear matched.*dense layers found: head"):
        optorth.nn.adapt(model, ADAPTERS["oft"], exclude="head")
    plain = Net(nnx.Rngs(0))
    assert optorth.nn.merge(plain) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(include="("), "include='\\(' is not a regular expression"),
    (dict(include="nothing-here"), "no nnx.Linear matched include='nothing-here'.*hidden/0"),
])
def test_adapt_refuses_bad_selections(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optorth.nn.adapt(Net(nnx.Rngs(0)), ADAPTERS["oft"], **kwargs)


def test_adapt_refuses_a_non_callable_and_adapters_refuse_a_non_linear():
    with pytest.raises(ValueError, match="make_adapter must be callable"):
        optorth.nn.adapt(Net(nnx.Rngs(0)), "oft")
    for make in ADAPTERS.values():
        with pytest.raises(ValueError, match="expected an nnx.Linear to adapt, got RMSNorm"):
            make(nnx.RMSNorm(WIDTH, rngs=nnx.Rngs(0)))


def test_adapters_refuse_inputs_of_the_wrong_width():
    layer = ADAPTERS["hra"](nnx.Linear(WIDTH, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="inputs have 8 features.*takes 16"):
        layer(jnp.ones((2, 8)))
