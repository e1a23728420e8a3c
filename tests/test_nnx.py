"""Flax NNX: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with every ready optimizer.

The model is a small transformer whose blocks are created by ``nnx.vmap`` and applied by
``nnx.scan`` (so every block parameter is stacked along a leading layer axis), with a conv1d
stem, token embeddings and an output head: every kind of leaf a router must place. Ground
truth: the plain optax path on the same gradients, and Keller Jordan's Newton–Schulz written
out in float64 NumPy for each stacked layer.
"""

import jax
import numpy as np
import optax
import pytest
from _ns_reference import jordan_newton_schulz
from _ready import READY, STATE_KINDS, UNROUTED, adamw, build, tiered
from flax import nnx

import optorth
from optorth import MatrixSpec

VOCAB, D, HEADS, LAYERS, SEQ, BATCH = 16, 16, 2, 2, 8, 4
FALLBACK = "fallback"


class Block(nnx.Module):
    def __init__(self, rngs):
        self.norm = nnx.RMSNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=HEADS, in_features=D, decode=False,
                                           rngs=rngs)
        self.mlp_in = nnx.Linear(D, 2 * D, rngs=rngs)
        self.mlp_out = nnx.Linear(2 * D, D, rngs=rngs)

    def __call__(self, x):
        h = self.norm(x)
        x = x + self.attn(h, mask=nnx.make_causal_mask(h[..., 0]))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(x)))


class ScanLM(nnx.Module):
    """Embedding → causal conv1d stem → ``LAYERS`` scanned blocks → output head."""

    def __init__(self, *, rngs):
        self.embed = nnx.Embed(VOCAB, D, rngs=rngs)
        self.stem = nnx.Conv(D, D, kernel_size=(3,), padding="CAUSAL", rngs=rngs)

        @nnx.split_rngs(splits=LAYERS)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs):
            return Block(rngs)

        self.blocks = make_blocks(rngs)
        self.lm_head = nnx.Linear(D, VOCAB, use_bias=False, rngs=rngs)

    def __call__(self, tokens):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.lm_head(body(self.stem(self.embed(tokens)), self.blocks))


#: Attention kernels by optorth's NNX rules; the scanned MLP kernels and the conv1d stem (both
#: rank 3, ambiguous by shape) by explicit rules.
RULES = optorth.nnx_attention_rules() + [
    (r"^blocks/mlp_(in|out)/kernel$", MatrixSpec.stacked()),
    (r"^stem/kernel$", MatrixSpec.conv(spatial_dims=1)),
]
MATRIX_LEAVES = {
    "blocks/attn/query/kernel": MatrixSpec((-3,), (-2, -1)),
    "blocks/attn/key/kernel": MatrixSpec((-3,), (-2, -1)),
    "blocks/attn/value/kernel": MatrixSpec((-3,), (-2, -1)),
    "blocks/attn/out/kernel": MatrixSpec((-3, -2), (-1,)),
    "blocks/mlp_in/kernel": MatrixSpec.stacked(),
    "blocks/mlp_out/kernel": MatrixSpec.stacked(),
    "stem/kernel": MatrixSpec.conv(spatial_dims=1),
}

TOKENS = jax.random.randint(jax.random.PRNGKey(1), (BATCH, SEQ + 1), 0, VOCAB)
INPUTS, TARGETS = TOKENS[:, :-1], TOKENS[:, 1:]


def loss_fn(model):
    return optax.softmax_cross_entropy_with_integer_labels(model(INPUTS), TARGETS).mean()


@nnx.jit
def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss, grads


def _flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x == FALLBACK or isinstance(x, MatrixSpec))[0]
    return {optorth.matrices._paths.path_to_str(p): v for p, v in leaves}


def _pure_params(model):
    return _flat(nnx.as_pure(nnx.state(model, nnx.Param)))


def test_the_ready_list_covers_every_ready_optimizer():
    """tests/_ready.py must list every exported optimizer (first argument ``learning_rate``)."""
    import inspect

    ready = {name for name in dir(optorth) if getattr(getattr(optorth, name), "__module__", "")
             .startswith("optorth.optimizers.") and list(inspect.signature(
                 getattr(optorth, name)).parameters)[:1] == ["learning_rate"]}
    assert ready == {factory.__name__ for factory, _ in READY.values()}
    assert ready == set(optorth.optimizers.READY)


def test_routing_by_nnx_paths():
    model = nnx.eval_shape(lambda: ScanLM(rngs=nnx.Rngs(0)))
    targets = _flat(optorth.route(model, RULES))
    expected = {path: FALLBACK for path in targets} | MATRIX_LEAVES
    assert targets == expected
    assert set(MATRIX_LEAVES) < set(targets) and "embed/embedding" in targets
    report = optorth.describe_routing(model, RULES)
    rows = {line.split()[0]: line.split() for line in report.splitlines()[2:-1]}
    assert rows["blocks/mlp_in/kernel"][4:8] == ["matrix", "in(1)", "out(2)", "2×(16×32)"]
    assert rows["stem/kernel"][4:8] == ["matrix", "in(0,1)", "out(2)", "1×(48×16)"]
    assert rows["lm_head/kernel"][3:5] == ["fallback", "output"]
    assert report.splitlines()[-1] == "7 matrix leaves, 10 fallback leaves"


def test_scanned_layers_without_a_rule_raise_at_optimizer_construction():
    model = ScanLM(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"'blocks/mlp_in/kernel' of shape \(2, 16, 32\)"
                                         r".*MatrixSpec\.stacked\(\)"):
        nnx.Optimizer(model, optorth.muon(rules=optorth.nnx_attention_rules()), wrt=nnx.Param)


@pytest.mark.parametrize("name", tiered(fast=STATE_KINDS))
def test_every_ready_optimizer_trains_through_nnx(name):
    """The matrix path alone (fallback frozen) reduces the loss; frozen leaves do not move."""
    model = ScanLM(rngs=nnx.Rngs(0))
    frozen = None if name in UNROUTED else optax.set_to_zero()
    optimizer = nnx.Optimizer(model, build(name, RULES, fallback=frozen), wrt=nnx.Param)
    before = _pure_params(model)
    losses = [float(train_step(model, optimizer)[0]) for _ in range(8)]
    after = _pure_params(model)
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert int(optimizer.step[...]) == 8
    for path, value in after.items():
        moved = not np.array_equal(value, before[path])
        assert moved == (name in UNROUTED or path in MATRIX_LEAVES), path


def test_nnx_optimizer_equals_plain_optax_and_orthogonalizes_each_layer():
    """init sees nnx.Param leaves, update plain arrays: same result as optax on arrays."""
    model = ScanLM(rngs=nnx.Rngs(0))
    tx = optorth.muon(learning_rate=0.02, rules=RULES, fallback=adamw())
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    state = tx.init(params)
    plain_step = jax.jit(tx.update)
    for step in range(2):
        start = _flat(params)
        _, grads = train_step(model, optimizer)
        grads = nnx.as_pure(nnx.state(grads, nnx.Param))
        updates, state = plain_step(grads, state, params)
        params = optax.apply_updates(params, updates)
        for path, value in _pure_params(model).items():
            np.testing.assert_allclose(value, _flat(params)[path], rtol=1e-6, atol=1e-6,
                                       err_msg=path)
        if step == 0:  # first Nesterov step: u ∝ g, so Δ = −lr·scale·NS(g) per matrix
            delta = {k: np.asarray(v) - np.asarray(start[k]) for k, v in _flat(params).items()}
            g = _flat(grads)
            for layer in range(LAYERS):
                expected = -0.02 * np.sqrt(2.0) * jordan_newton_schulz(np.asarray(
                    g["blocks/mlp_in/kernel"][layer]))
                np.testing.assert_allclose(delta["blocks/mlp_in/kernel"][layer], expected,
                                           atol=2e-5)
                query = np.asarray(g["blocks/attn/query/kernel"][layer]).reshape(D, D)
                np.testing.assert_allclose(delta["blocks/attn/query/kernel"][layer].reshape(D, D),
                                           -0.02 * jordan_newton_schulz(query), atol=2e-5)
            stem = np.asarray(g["stem/kernel"]).reshape(3 * D, D)
            np.testing.assert_allclose(delta["stem/kernel"].reshape(3 * D, D),
                                       -0.02 * jordan_newton_schulz(stem), atol=2e-5)
    assert optorth.checkpoint.coefficient_states(optimizer.opt_state)  # NamedTuples kept under NNX
