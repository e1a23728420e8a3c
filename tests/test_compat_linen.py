"""A third-party style Linen trainer through ``optorth.muon()``.

The settings of a Linen GPT trainer that nobody here wrote, in one small model: FSDP-style
``nn.Partitioned`` parameters (every kernel boxed, so every path would end in ``/value``),
``DenseGeneral`` attention kernels ``(d, heads, head_dim)`` / ``(heads, head_dim, d)``, a tied
embedding (the output layer is ``embedding.attend``), ``flax.training.TrainState``,
``optax.MultiSteps`` gradient accumulation, and ``jax_numpy_rank_promotion="raise"`` (set for
the test through the context manager, so it does not leak into other tests).
"""

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import optorth

VOCAB, D, HEADS, SEQ = 32, 16, 2, 8


def _boxed(init, names):
    return nn.with_partitioning(init, names)


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        head_dim = D // HEADS
        qkv_init = _boxed(nn.initializers.lecun_normal(), ("embed", "heads", "kv"))
        q, k, v = (nn.DenseGeneral((HEADS, head_dim), kernel_init=qkv_init,
                                   name=f"attn_{n}_proj")(x) for n in "qkv")
        weights = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((SEQ, SEQ), bool))
        weights = jnp.where(causal[None, None], weights, -1e9)
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(weights), v)
        out_init = _boxed(nn.initializers.lecun_normal(), ("heads", "kv", "embed"))
        return nn.DenseGeneral(D, axis=(-2, -1), kernel_init=out_init, name="attn_out_proj")(out)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x + Attention()(nn.LayerNorm()(x))
        h = nn.Dense(4 * D, kernel_init=_boxed(nn.initializers.lecun_normal(), ("embed", "mlp")))
        out = nn.Dense(D, kernel_init=_boxed(nn.initializers.lecun_normal(), ("mlp", "embed")))
        return x + out(nn.gelu(h(nn.LayerNorm()(x))))


class GPT(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(VOCAB, D, name="wte", embedding_init=_boxed(
            nn.initializers.normal(0.02), ("vocab", "embed")))
        x = embed(tokens)
        for i in range(2):
            x = Block(name=f"h_{i}")(x)
        return embed.attend(nn.LayerNorm()(x))  # tied: the embedding is the output layer


TOKENS = (np.arange(4 * (SEQ + 1), dtype=np.int32).reshape(4, SEQ + 1) * 7) % VOCAB


@functools.cache
def _params():
    """The model's initial parameters, built on first use: collecting this file in a worker
    that does not run it computes nothing."""
    return GPT().init(jax.random.PRNGKey(0), jnp.asarray(TOKENS[:, :-1]))["params"]
#: The rules describe_routing suggests for this model (one for q/k/v of every layer).
RULES = [
    (r"(^|/)(attn_k_proj|attn_q_proj|attn_v_proj)/kernel$", optorth.MatrixSpec((-3,), (-2, -1))),
    (r"(^|/)attn_out_proj/kernel$", optorth.MatrixSpec((-3, -2), (-1,))),
]


def _loss(params, apply_fn):
    logits = apply_fn({"params": params}, TOKENS[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, TOKENS[:, 1:]).mean()


@jax.jit
def _train_step(state):
    loss, grads = jax.value_and_grad(_loss)(state.params, state.apply_fn)
    return state.apply_gradients(grads=grads), loss


def test_describe_routing_suggests_the_rules_this_model_needs():
    report = optorth.matrices.routing_report(_params())
    assert [(s.pattern, s.spec) for s in report.suggestions] == RULES
    text = optorth.describe_routing(_params(), RULES)
    lines = text.splitlines()
    assert not any(line.split()[0].endswith("/value") for line in lines[2:] if line.strip())
    row = next(line for line in lines if line.startswith("h_0/Attention_0/attn_out_proj/kernel"))
    assert "matrix" in row and "1×(16×16)" in row
    row = next(line for line in lines if line.startswith("wte/embedding"))
    assert "fallback" in row and "embedding name 'wte'" in row
    assert lines[-1] == "12 matrix leaves, 23 fallback leaves"
    assert "warnings:" not in text


def test_the_suggested_rules_are_what_the_docs_show():
    import pathlib

    page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "drop_in.md").read_text()
    assert optorth.describe_routing(_params()) in page
    assert optorth.describe_routing(_params(), RULES) in page


def test_trains_with_partitioned_params_multisteps_and_rank_promotion_raise():
    tx = optax.MultiSteps(optorth.muon(rules=RULES), every_k_schedule=2)
    with jax.numpy_rank_promotion("raise"), warnings.catch_warnings():
        warnings.simplefilter("error", optorth.matrices.RoutingWarning)
        state = train_state.TrainState.create(apply_fn=GPT().apply, params=_params(), tx=tx)
        losses = []
        for _ in range(12):
            state, loss = _train_step(state)
            losses.append(float(loss))
    # MultiSteps applies every second step: the loss holds, then falls.
    assert losses[0::2] == losses[1::2], losses
    assert all(np.diff(losses[0::2]) < 0) and losses[-1] < 0.95 * losses[0], losses
    # The boxes survive the update, and every boxed kernel moved every second step.
    kernel = state.params["h_1"]["Attention_0"]["attn_out_proj"]["kernel"]
    assert isinstance(kernel, nn.Partitioned) and kernel.names == ("heads", "kv", "embed")
    before = _params()["h_1"]["Attention_0"]["attn_out_proj"]["kernel"].value
    assert float(jnp.abs(kernel.value - before).max()) > 1e-3


def test_a_rule_ending_in_kernel_matches_the_boxed_kernel():
    specs = optorth.route(_params(), RULES + [(r"h_1/Dense_1/kernel$", "fallback")])
    assert specs["h_1"]["Dense_1"]["kernel"] == "fallback"
    assert specs["h_0"]["Dense_1"]["kernel"] == optorth.MatrixSpec()
