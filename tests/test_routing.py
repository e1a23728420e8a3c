"""Routing of every leaf of a small NNX transformer and a small CNN, rules, errors, reports."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _ns_reference import jordan_newton_schulz
from flax import nnx

import optorth
from optorth import MatrixSpec

FALLBACK = "fallback"


class Block(nnx.Module):
    def __init__(self, d, heads, rngs):
        self.norm1 = nnx.LayerNorm(d, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=d, decode=False,
                                           rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, 4 * d, rngs=rngs)
        self.down = nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))


class Transformer(nnx.Module):
    def __init__(self, vocab=11, d=8, heads=2, layers=2, *, rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.blocks = nnx.List([Block(d, heads, rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(d, rngs=rngs)
        self.lm_head = nnx.Linear(d, vocab, use_bias=False, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


class CNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 4, kernel_size=(3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(4, rngs=rngs)
        self.conv2 = nnx.Conv(4, 8, kernel_size=(3, 3), rngs=rngs)
        self.fc = nnx.Linear(8, 16, rngs=rngs)
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = jax.nn.relu(self.conv2(x)).mean(axis=(1, 2))
        return self.head(jax.nn.relu(self.fc(x)))


def _abstract(cls):
    """The model's ``nnx.Param`` state with abstract leaves (no initialization compute)."""
    return nnx.state(nnx.eval_shape(lambda: cls(rngs=nnx.Rngs(0))), nnx.Param)


def _flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x == FALLBACK or
                                                  isinstance(x, MatrixSpec))[0]
    return {optorth.matrices._paths.path_to_str(p): v for p, v in leaves}


def _expected_transformer(layers=2, per_head=False):
    qkv = MatrixSpec((-3,), (-1,)) if per_head else MatrixSpec((-3,), (-2, -1))
    out = MatrixSpec((-2,), (-1,)) if per_head else MatrixSpec((-3, -2), (-1,))
    expected = {"embed/embedding": FALLBACK, "lm_head/kernel": FALLBACK,
                "norm/scale": FALLBACK, "norm/bias": FALLBACK}
    for i in range(layers):
        b = f"blocks/{i}"
        for name in ("norm1", "norm2"):
            expected.update({f"{b}/{name}/scale": FALLBACK, f"{b}/{name}/bias": FALLBACK})
        for name in ("query", "key", "value"):
            expected.update({f"{b}/attn/{name}/kernel": qkv, f"{b}/attn/{name}/bias": FALLBACK})
        expected.update({f"{b}/attn/out/kernel": out, f"{b}/attn/out/bias": FALLBACK})
        for name in ("up", "down"):
            expected.update({f"{b}/{name}/kernel": MatrixSpec(), f"{b}/{name}/bias": FALLBACK})
    return expected


@pytest.mark.parametrize("per_head", [False, True])
def test_every_leaf_of_a_small_transformer(per_head):
    model = nnx.eval_shape(lambda: Transformer(rngs=nnx.Rngs(0)))
    variables = nnx.state(model, nnx.Param)  # what nnx.Optimizer passes to tx.init
    rules = optorth.nnx_attention_rules(per_head=per_head)
    expected = _expected_transformer(per_head=per_head)
    assert _flat(optorth.route(variables, rules)) == expected
    assert _flat(optorth.route(nnx.as_pure(variables), rules)) == expected  # as at update
    assert _flat(optorth.route(model, rules)) == expected
    shapes = {p: optorth.matrices._paths.shape_of(x) for p, x in _flat_leaves(variables).items()}
    assert shapes["blocks/0/attn/query/kernel"] == (8, 2, 4)
    spec = expected["blocks/0/attn/query/kernel"]
    assert spec.matrix_shape((8, 2, 4)) == ((2, 8, 4) if per_head else (1, 8, 8))


def _flat_leaves(tree):
    items, _ = optorth.matrices._paths.flatten_with_paths(tree)
    return dict(items)


def test_attention_kernels_are_ambiguous_without_rules():
    variables = _abstract(Transformer)
    with pytest.raises(ValueError, match=r"blocks/0/attn/key/kernel.*\(8, 2, 4\).*rules"):
        optorth.route(variables)


def test_every_leaf_of_a_small_cnn():
    variables = _abstract(CNN)
    conv = MatrixSpec.conv()
    assert _flat(optorth.route(variables)) == {
        "conv1/kernel": conv, "conv1/bias": FALLBACK, "bn1/scale": FALLBACK,
        "bn1/bias": FALLBACK, "conv2/kernel": conv, "conv2/bias": FALLBACK,
        "fc/kernel": MatrixSpec(), "fc/bias": FALLBACK, "head/kernel": FALLBACK,
        "head/bias": FALLBACK,
    }
    assert conv.matrix_shape((3, 3, 4, 8)) == (1, 36, 8)


def test_rules_first_match_wins_and_override_defaults():
    params = {"embed": jnp.zeros((10, 4)), "w": jnp.zeros((4, 8)),
              "stack": jnp.zeros((3, 4, 8)), "b": jnp.zeros(8)}
    rules = [("^stack$", MatrixSpec.stacked()), ("^embed$", MatrixSpec()),
             ("^w$", FALLBACK), ("^w$", MatrixSpec())]
    assert optorth.route(params, rules) == {
        "embed": MatrixSpec(), "w": FALLBACK, "stack": MatrixSpec.stacked(), "b": FALLBACK}
    assert optorth.route({"out_embed": jnp.zeros((4, 8))}, embedding_patterns=()) == {
        "out_embed": MatrixSpec()}


def test_bad_rules_and_misfitting_specs_raise_with_the_path():
    params = {"layer": {"kernel": jnp.zeros((3, 4, 8))}}
    with pytest.raises(ValueError, match="each rule is a"):
        optorth.route(params, [("kernel",)])
    with pytest.raises(ValueError, match="must be an optorth.MatrixSpec or 'fallback'"):
        optorth.route(params, [("kernel", "matrix")])
    with pytest.raises(ValueError, match=r"layer/kernel.*\(3, 4, 8\).*do not exist"):
        optorth.route(params, [("kernel", MatrixSpec((3,), (4,)))])
    with pytest.raises(ValueError, match=r"layer/kernel.*stacked"):
        optorth.route(params)
    with pytest.raises(ValueError, match=r"rank 5"):
        optorth.route({"k": jnp.zeros((2, 3, 3, 2, 4))})


def test_non_float_and_small_leaves_fall_back():
    params = {"step": jnp.zeros((), jnp.int32), "ids": jnp.zeros((3, 4), jnp.int32),
              "w": jax.ShapeDtypeStruct((4, 8), jnp.float32), "h": jnp.zeros((4, 8), jnp.bfloat16)}
    assert optorth.route(params) == {"step": FALLBACK, "ids": FALLBACK, "w": MatrixSpec(),
                                     "h": MatrixSpec()}


def test_describe_routing_reports_each_leaf_for_variables_and_arrays():
    variables = _abstract(CNN)
    text = optorth.describe_routing(variables)
    assert text == optorth.describe_routing(nnx.as_pure(variables))
    lines = text.splitlines()
    assert lines[0].split() == ["path", "shape", "route", "spec", "matrices", "reason"]
    row = next(line for line in lines if line.startswith("conv2/kernel"))
    assert "matrix" in row and "in(0,1,2) out(3)" in row and "1×(36×8)" in row
    row = next(line for line in lines if line.startswith("head/kernel"))
    assert "fallback" in row and "output head name 'head'" in row
    assert lines[-1] == "3 matrix leaves, 7 fallback leaves"


def test_nnx_optimizer_runs_and_takes_the_matrix_path():
    model = Transformer(rngs=nnx.Rngs(0))
    rules = optorth.nnx_attention_rules()
    tx = optorth.muon(learning_rate=0.02, rules=rules, fallback=optax.set_to_zero())
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = nnx.as_pure(nnx.state(model, nnx.Param))
    tokens = jnp.arange(12).reshape(2, 6) % 11

    def loss_fn(model):
        logits = model(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    @nnx.jit
    def train_step(model, optimizer):
        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)
        return grads

    g = nnx.as_pure(nnx.state(train_step(model, optimizer), nnx.Param))
    after = nnx.as_pure(nnx.state(model, nnx.Param))
    delta = jax.tree.map(lambda a, b: np.asarray(a - b), after, before)
    assert np.abs(delta["embed"]["embedding"]).max() == 0  # fallback, lr 0
    # Matrix leaves moved by -lr·scale·NS5(g) (first Nesterov step: u ∝ g).
    up = ("blocks", 0, "up", "kernel")  # (8, 32): Keller scale sqrt(32/8) = 2
    query = ("blocks", 1, "attn", "query", "kernel")  # (8, 2, 4) seen as 8×8: scale 1
    for path, scale in ((up, 2.0), (query, 1.0)):
        step, grad = delta, g
        for key in path:
            step, grad = step[key], grad[key]
        expected = -0.02 * scale * jordan_newton_schulz(np.asarray(grad).reshape(8, -1))
        np.testing.assert_allclose(step.reshape(8, -1), expected, atol=2e-5)


