"""QK-clip against NumPy from the equations of Kimi K2 (Kimi Team, "Kimi K2: Open Agentic
Intelligence", arXiv 2507.20534): S_max^h = max over the batch of q_hᵀk_h/√d,
γ_h = min(1, τ/S_max^h), W_q^h, W_k^h ← √γ_h ·; for MLA the non-rotary parts √γ_h, the
rotary query γ_h, the shared rotary key untouched."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optorth

TAU = 4.0


def _np_gamma(s_max, tau=TAU):
    return np.where(s_max > tau, tau / np.where(s_max > tau, s_max, 1.0), 1.0)


def _np_max_logits(q, k):
    """q, k: (B, T, H, D) → (H,) max of q_h·k_h/√D over batch and positions (no mask)."""
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    return logits.max(axis=(0, 2, 3))


def _apply_clip(clip, params, max_logits, updates=None):
    """The clipped weights: qk_clip after a zero step (or after ``updates``)."""
    tx = optorth.qk_clip(clip)
    updates = jax.tree.map(jnp.zeros_like, params) if updates is None else updates
    u, _ = jax.jit(tx.update)(updates, tx.init(params), params, max_logits=max_logits)
    return optax.apply_updates(params, u)


# ---------------------------------------------------------------- nnx.MultiHeadAttention


def _mha(seed=0, heads=4, features=16, scale=3.0):
    attn = nnx.MultiHeadAttention(heads, features, decode=False, rngs=nnx.Rngs(seed))
    for proj in (attn.query, attn.key):  # large q/k weights: logits well above τ
        proj.kernel[...] = proj.kernel[...] * scale
        proj.bias[...] = jax.random.normal(jax.random.key(seed + 7), proj.bias.shape)
    optorth.nn.track_max_logits(attn)
    return attn


def _np_qk_mha(params, x):
    q = np.einsum("btd,dhk->bthk", x, params["query"]["kernel"]) + params["query"]["bias"]
    k = np.einsum("btd,dhk->bthk", x, params["key"]["kernel"]) + params["key"]["bias"]
    return q, k


def test_recorded_maxima_of_multi_head_attention_match_numpy():
    attn = _mha()
    x = jax.random.normal(jax.random.key(1), (3, 5, 16))
    with optorth.nn.capture_max_logits() as record:
        attn(x)
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(attn, nnx.Param)))
    want = _np_max_logits(*_np_qk_mha(params, np.asarray(x, np.float64)))
    np.testing.assert_allclose(np.asarray(record[""]), want, rtol=1e-5)


def test_clip_of_multi_head_attention_is_the_papers_per_head_rescaling():
    attn = _mha()
    x = jax.random.normal(jax.random.key(1), (3, 5, 16))
    with optorth.nn.capture_max_logits() as record:
        attn(x)
    params = nnx.to_pure_dict(nnx.state(attn, nnx.Param))
    s_max = np.asarray(record[""], np.float64)
    tau = float(np.median(s_max))  # about half of the heads above τ
    gamma = _np_gamma(s_max, tau)
    assert 0 < np.sum(gamma < 1) < len(gamma)
    clipped = _apply_clip(optorth.QKClip(tau), params, record)
    for name in ("query", "key"):
        for leaf in ("kernel", "bias"):  # heads on axis −2 of (d, H, dh) and (H, dh)
            x0 = np.asarray(params[name][leaf], np.float64)
            want = x0 * np.sqrt(gamma)[:, None]
            np.testing.assert_allclose(clipped[name][leaf], want, rtol=1e-5, atol=1e-6)
            below = gamma == 1  # heads at or below τ are not touched at all
            np.testing.assert_array_equal(np.asarray(clipped[name][leaf])[..., below, :],
                                          np.asarray(params[name][leaf])[..., below, :])
    for name in ("value", "out"):
        np.testing.assert_array_equal(clipped[name]["kernel"], params[name]["kernel"])
    # On the batch that produced the maxima every logit is now ≤ τ, the clipped heads at τ.
    after = _np_max_logits(*_np_qk_mha(jax.tree.map(np.asarray, clipped),
                                       np.asarray(x, np.float64)))
    assert np.all(after <= tau * (1 + 1e-5))
    np.testing.assert_allclose(after[gamma < 1], tau, rtol=1e-5)


def test_masked_positions_do_not_count():
    attn = _mha()
    x = jax.random.normal(jax.random.key(2), (2, 6, 16))
    with optorth.nn.capture_max_logits() as record:
        attn(x, mask=nnx.make_causal_mask(jnp.ones((2, 6))))
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(attn, nnx.Param)))
    q, k = _np_qk_mha(params, np.asarray(x, np.float64))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(np.tril(np.ones((6, 6), bool)), logits, -np.inf)
    np.testing.assert_allclose(record[""], logits.max(axis=(0, 2, 3)), rtol=1e-5)


def test_nothing_is_recorded_outside_a_capture_and_outputs_are_unchanged():
    attn = nnx.MultiHeadAttention(2, 8, decode=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (1, 4, 8))
    before = attn(x)
    optorth.nn.track_max_logits(attn)
    np.testing.assert_array_equal(attn(x), before)
    with optorth.nn.capture_max_logits() as record:
        np.testing.assert_array_equal(attn(x), before)
    assert list(record) == [""]


# ---------------------------------------------------------------- user attention layouts


def _user_attention(params, x, heads, layout):
    """Own attention on 2-D kernels, recording through optorth.nn.record_max_logits."""
    b, t, d = x.shape
    if layout == "fused":
        q, k, _ = jnp.split(x @ params["attn"]["qkv"]["kernel"], 3, axis=-1)
    else:
        q, k = x @ params["attn"]["query"]["kernel"], x @ params["attn"]["key"]["kernel"]
    q, k = q.reshape(b, t, heads, -1), k.reshape(b, t, heads, -1)
    logits = optorth.nn.attention_logits(q, k)
    optorth.nn.record_max_logits("attn", logits)
    return q, k


@pytest.mark.parametrize("layout", ["separate", "fused"])
def test_clip_of_two_dimensional_kernels(layout):
    heads, d, dh = 3, 8, 4
    rng = np.random.default_rng(0)
    if layout == "fused":
        params = {"attn": {"qkv": {"kernel": jnp.asarray(3 * rng.normal(size=(d, 3 * heads * dh)),
                                                         jnp.float32)}}}
        clip = optorth.QKClip.fused(TAU, "qkv/kernel")
    else:
        params = {"attn": {n: {"kernel": jnp.asarray(3 * rng.normal(size=(d, heads * dh)),
                                                     jnp.float32)} for n in ("query", "key")}}
        clip = optorth.QKClip.separate(TAU)
    x = jnp.asarray(rng.normal(size=(2, 5, d)), jnp.float32)
    with optorth.nn.capture_max_logits() as record:
        q, k = _user_attention(params, x, heads, layout)
    gamma = _np_gamma(_np_max_logits(np.asarray(q, np.float64), np.asarray(k, np.float64)))
    assert 0 < np.sum(gamma < 1)
    clipped = _apply_clip(clip, params, record)
    per_coord = np.repeat(np.sqrt(gamma), dh)  # head h owns columns [h·dh, (h+1)·dh)
    if layout == "fused":
        want = np.asarray(params["attn"]["qkv"]["kernel"]) * np.concatenate(
            [per_coord, per_coord, np.ones(heads * dh)])  # V untouched
        np.testing.assert_allclose(clipped["attn"]["qkv"]["kernel"], want, rtol=1e-5)
    else:
        for n in ("query", "key"):
            want = np.asarray(params["attn"][n]["kernel"]) * per_coord
            np.testing.assert_allclose(clipped["attn"][n]["kernel"], want, rtol=1e-5)
    with optorth.nn.capture_max_logits() as after:
        _user_attention(clipped, x, heads, layout)
    assert np.all(np.asarray(after["attn"]) <= TAU * (1 + 1e-5))


def test_multi_head_latent_attention_split():
    """MLA: q_h = [c_q W_qc^h | RoPE(c_q W_qr^h)], k_h = [c_kv W_kc^h | RoPE(x W_kr)] with
    W_kr shared by all heads. The rotary position map is orthogonal and the same before and
    after the clip, so it is left out here."""
    heads, r, nope, rope, dv = 3, 6, 4, 2, 5
    rng = np.random.default_rng(1)
    params = {"attn": {
        "wq_b": {"kernel": 2 * rng.normal(size=(r, heads * (nope + rope)))},
        "wkv_b": {"kernel": 2 * rng.normal(size=(r, heads * (nope + dv)))},
        "wkv_a": {"kernel": 2 * rng.normal(size=(r, rope))},  # shared rotary key
    }}

    def qk(p, c):
        qh = (c @ p["attn"]["wq_b"]["kernel"]).reshape(*c.shape[:2], heads, nope + rope)
        kv = (c @ p["attn"]["wkv_b"]["kernel"]).reshape(*c.shape[:2], heads, nope + dv)
        k_rope = np.broadcast_to((c @ p["attn"]["wkv_a"]["kernel"])[:, :, None, :],
                                 (*c.shape[:2], heads, rope))
        return qh, np.concatenate([kv[..., :nope], k_rope], axis=-1)

    c = rng.normal(size=(2, 5, r))
    with jax.enable_x64(True):
        s_max = _np_max_logits(*qk(params, c))
        gamma = _np_gamma(s_max)
        assert 0 < np.sum(gamma < 1)
        clip = optorth.QKClip.mla(TAU, nope_dim=nope, rope_dim=rope, v_dim=dv,
                                  query="wq_b/kernel", key_value="wkv_b/kernel")
        jparams = jax.tree.map(jnp.asarray, params)
        clipped = jax.tree.map(np.asarray, _apply_clip(clip, jparams, {"attn": jnp.asarray(s_max)}))
    g = gamma[:, None]
    q_want = params["attn"]["wq_b"]["kernel"].reshape(r, heads, nope + rope) * np.concatenate(
        [np.broadcast_to(np.sqrt(g), (heads, nope)), np.broadcast_to(g, (heads, rope))], -1)
    kv_want = params["attn"]["wkv_b"]["kernel"].reshape(r, heads, nope + dv) * np.concatenate(
        [np.broadcast_to(np.sqrt(g), (heads, nope)), np.ones((heads, dv))], -1)
    np.testing.assert_allclose(clipped["attn"]["wq_b"]["kernel"].reshape(r, heads, -1), q_want,
                               rtol=1e-6)
    np.testing.assert_allclose(clipped["attn"]["wkv_b"]["kernel"].reshape(r, heads, -1),
                               kv_want, rtol=1e-6)
    np.testing.assert_array_equal(clipped["attn"]["wkv_a"]["kernel"],
                                  params["attn"]["wkv_a"]["kernel"])
    after = _np_max_logits(*qk(clipped, c))
    assert np.all(after <= TAU * (1 + 1e-6))
    np.testing.assert_allclose(after[gamma < 1], TAU, rtol=1e-6)


# ---------------------------------------------------------------- in optimizers


def _model_and_batch():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.MultiHeadAttention(2, 8, decode=False, rngs=rngs)
            self.mlp = nnx.Linear(8, 8, rngs=rngs)

        def __call__(self, x):
            return self.mlp(self.attn(x))

    model = Net(nnx.Rngs(0))
    for proj in (model.attn.query, model.attn.key):
        proj.kernel[...] = proj.kernel[...] * 4.0
    optorth.nn.track_max_logits(model)
    x = jax.random.normal(jax.random.key(0), (2, 4, 8))
    return model, x


def _grads_and_maxima(model, x):
    def loss(m):
        with optorth.nn.capture_max_logits() as record:
            y = m(x)
        return jnp.mean(y**2), record

    grads, record = nnx.grad(loss, has_aux=True)(model)
    return nnx.state(grads, nnx.Param), record


def test_muon_with_qk_clip_applies_the_clip_to_the_stepped_weights():
    model, x = _model_and_batch()
    grads, record = _grads_and_maxima(model, x)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    grads = nnx.to_pure_dict(grads)
    rules = optorth.nnx_attention_rules()
    plain = optorth.muon(0.02, rules=rules)
    clip = optorth.QKClip(float(np.median(record["attn"])) * 0.9)
    clipped = optorth.muon(0.02, rules=rules, qk_clip=clip)
    u0, _ = plain.update(grads, plain.init(params), params)
    u1, _ = jax.jit(clipped.update)(grads, clipped.init(params), params, max_logits=record)
    gamma = _np_gamma(np.asarray(record["attn"], np.float64), clip.threshold)
    assert np.sum(gamma < 1) >= 1
    for name in ("query", "key"):
        x0 = np.asarray(params["attn"][name]["kernel"])
        want = (x0 + np.asarray(u0["attn"][name]["kernel"])) * np.sqrt(gamma)[:, None]
        got = x0 + np.asarray(u1["attn"][name]["kernel"])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u1["mlp"]["kernel"], u0["mlp"]["kernel"], rtol=1e-5, atol=1e-6)


def test_nnx_optimizer_inject_hyperparams_and_jit():
    model, x = _model_and_batch()
    clip = optorth.QKClip(1.0)
    tx = optax.inject_hyperparams(optorth.muon)(learning_rate=0.01, qk_clip=clip,
                                                 rules=optorth.nnx_attention_rules())
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        grads, record = _grads_and_maxima(model, x)
        optimizer.update(model, grads, max_logits=record)
        return record

    record = step(model, optimizer)
    assert float(jnp.max(record["attn"])) > clip.threshold
    with optorth.nn.capture_max_logits() as after:
        model(x)
    # After one clipped step at a small lr the maxima fell towards τ on the same batch.
    assert float(jnp.max(after["attn"])) < float(jnp.max(record["attn"]))


def test_under_multi_steps_the_emitted_update_is_the_clipped_one():
    rng = np.random.default_rng(0)
    params = {"attn": {n: {"kernel": jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)}
                       for n in ("query", "key")}}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(2)]
    maxima = {"attn": jnp.array([9.0, 2.0])}
    inner = optax.chain(optax.sgd(0.1), optorth.qk_clip(optorth.QKClip(TAU)))
    multi = optax.MultiSteps(inner, every_k_schedule=2)
    state = multi.init(params)
    for g in grads:
        u, state = jax.jit(multi.update)(g, state, params, max_logits=maxima)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    want, _ = inner.update(mean, inner.init(params), params, max_logits=maxima)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), u, want)


# ---------------------------------------------------------------- errors


def test_errors_name_the_layer_and_the_fix():
    params = {"blocks": {"0": {"attn": {"q": {"kernel": jnp.ones((4, 6))}}}}}
    tx = optorth.qk_clip(optorth.QKClip.separate(TAU))
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"no leaf 'blocks/0/attn/query/kernel'.*QKClip"):
        tx.update(params, state, params, max_logits={"blocks/0/attn": jnp.ones(2)})
    with pytest.raises(ValueError, match="max_logits"):
        tx.update(params, state, params)
    tx = optorth.qk_clip(optorth.QKClip.separate(TAU, "q/kernel", "q/kernel"))
    with pytest.raises(ValueError, match=r"does not split into 4 heads"):
        tx.update(params, state, params, max_logits={"blocks/0/attn": jnp.ones(4)})
    with pytest.raises(ValueError, match=r"expected \(heads,\)"):
        tx.update(params, state, params, max_logits={"blocks/0/attn": jnp.ones((2, 3))})


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), "10", None])
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(ValueError, match="threshold"):
        optorth.QKClip(bad)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="QKLeaf"):
        optorth.blocks.QKLeaf(-1, (((0, 0.5),),))
    with pytest.raises(ValueError, match="QKLeaf"):
        optorth.blocks.QKLeaf(-1, (((4, -1.0),),))
    with pytest.raises(ValueError, match="leaves"):
        optorth.QKClip(10.0, {"query/kernel": "heads"})
    with pytest.raises(ValueError, match="qk_clip must be an optorth.QKClip"):
        optorth.muon(qk_clip=10.0)


_SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np, optax, optorth
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((8,), ("x",))
rng = np.random.default_rng(0)
params = {"attn": {n: {"kernel": jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)}
                   for n in ("query", "key")}}
grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
maxima = {"attn": jnp.asarray([9.0, 2.0, 30.0, 4.0, 5.0, 12.0, 1.0, 3.0])}
tx = optax.chain(optax.sgd(0.1), optorth.qk_clip(optorth.QKClip.separate(4.0)))
want, _ = tx.update(grads, tx.init(params), params, max_logits=maxima)
shard = NamedSharding(mesh, P(None, "x"))
sp, sg = (jax.device_put(t, shard) for t in (params, grads))
got, _ = jax.jit(tx.update)(sg, tx.init(sp), sp, max_logits=maxima)
assert got["attn"]["query"]["kernel"].sharding.is_equivalent_to(shard, 2)
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, want)
print("sharded ok")
"""


@pytest.mark.slow
def test_sharded_kernels_on_8_simulated_devices():
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    done = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sharded ok" in done.stdout
