"""A tiny FSDP-sharded language model, its jitted ``optorth.muon`` step and its Orbax
checkpoints, shared by the multi-process test and the resharded-restore test.

Parameters: an embedding (tied to the output), two residual MLP blocks whose four matrices come
in two shapes, and one bias. Every parameter is sharded on its first axis over the mesh axis
``"fsdp"`` (replicated over any other, e.g. ``"replica"`` of an HSDP mesh); the token batch is
sharded over every mesh axis. The host values come from a seeded NumPy generator, so every
process and every run builds the same model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optorth

VOCAB, WIDTH, HIDDEN = 32, 16, 32
BATCH, SEQ = 8, 4
SHAPES = {
    "embed/embedding": (VOCAB, WIDTH),
    "block0/w_in": (WIDTH, HIDDEN),
    "block0/bias": (HIDDEN,),
    "block0/w_out": (HIDDEN, WIDTH),
    "block1/w_in": (WIDTH, HIDDEN),
    "block1/w_out": (HIDDEN, WIDTH),
}


def host_params() -> dict:
    """The initial parameters as NumPy arrays, ``{"block0": {"w_in": ...}, ...}``."""
    rng = np.random.default_rng(0)
    params = {}
    for path, shape in SHAPES.items():
        module, name = path.split("/")
        scale = 0.0 if name == "bias" else 1.0 / np.sqrt(shape[0])
        params.setdefault(module, {})[name] = (scale * rng.standard_normal(shape)).astype(
            np.float32)
    return params


def host_tokens(step: int) -> np.ndarray:
    """The token batch of a training step, ``(BATCH, SEQ + 1)`` int32."""
    return np.random.default_rng(1000 + step).integers(0, VOCAB, (BATCH, SEQ + 1), np.int32)


def fsdp(mesh, ndim: int) -> NamedSharding:
    """First axis sharded over ``"fsdp"``, the rest (and every other mesh axis) replicated."""
    return NamedSharding(mesh, P("fsdp", *([None] * (ndim - 1))))


def data_parallel(mesh) -> NamedSharding:
    """First axis sharded over every mesh axis (the token batch)."""
    return NamedSharding(mesh, P(tuple(mesh.axis_names)))


def _global(x, sharding):
    """A global array of host value ``x``; each process supplies only the shards its own
    devices hold (works with one process and with several)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def place(host_tree, mesh):
    """The parameters as global arrays sharded by `fsdp`."""
    return jax.tree.map(lambda x: _global(x, fsdp(mesh, x.ndim)), host_tree)


def init_state(tx, params, mesh):
    """``tx.init(params)`` as global arrays: the parameter-shaped leaves keep the sharding
    ``tx.init`` gives them (the parameters'), the rest (step counts, coefficient tables) are
    replicated over ``mesh``."""
    def globalize(x):
        if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh:
            return x
        return _global(np.asarray(x), NamedSharding(mesh, P()))

    return jax.tree.map(globalize, tx.init(params))


def fresh(tx, mesh):
    """Parameters and optimizer state as a new run under ``mesh`` starts them."""
    params = place(host_params(), mesh)
    return params, init_state(tx, params, mesh)


def save(path, params, state):
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, {"params": params, "opt": state})


def restore(path, tx, mesh):
    """The checkpoint at ``path`` resharded for ``mesh`` (the restore target is a fresh run's
    state under ``mesh``), its coefficient state reconciled with the fresh one.

    Returns ``((params, state), (fresh_params, fresh_state))``.
    """
    fresh_params, fresh_state = fresh(tx, mesh)
    target = {"params": fresh_params, "opt": fresh_state}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, abstract)
    state = optorth.reconcile_coefficients(restored["opt"], fresh_state)
    return (restored["params"], state), (fresh_params, fresh_state)


def assert_sharded_like(tree, reference, mesh):
    """Every leaf of ``tree`` lives on ``mesh``, sharded like its ``reference`` leaf."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    for (path, x), y in zip(flat, jax.tree.leaves(reference), strict=True):
        where = jax.tree_util.keystr(path)
        assert isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh, where
        assert x.sharding.is_equivalent_to(y.sharding, x.ndim), (where, x.sharding, y.sharding)


def loss(params, tokens):
    """Next-token cross-entropy of the residual MLP with a tied embedding."""
    embedding = params["embed"]["embedding"]
    h = embedding[tokens[:, :-1]]
    for name in ("block0", "block1"):
        block = params[name]
        hidden = h @ block["w_in"] + block.get("bias", 0.0)
        h = h + jnp.tanh(hidden) @ block["w_out"]
    logits = h @ embedding.T
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def optimizer() -> optax.GradientTransformation:
    """``optorth.muon`` with weight decay (the embedding and the bias go to its AdamW)."""
    return optorth.muon(learning_rate=0.02, weight_decay=0.01)


_STEPS = {}


def _key(tree):
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(leaves)


def make_step(tx, param_shardings, state_shardings):
    """The jitted training step, its outputs pinned to the given shardings (one per
    optimizer and shardings, so each mesh compiles once)."""
    key = (tx, _key(param_shardings), _key(state_shardings))
    if key not in _STEPS:
        def step(params, state, tokens):
            grads = jax.grad(loss)(params, tokens)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        _STEPS[key] = jax.jit(step, out_shardings=(param_shardings, state_shardings))
    return _STEPS[key]


def shardings(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


def train(params, state, tx, mesh, start: int, count: int):
    """``count`` steps from step ``start`` (the token batch of step ``k`` is
    ``host_tokens(k)``), each output sharded like its input."""
    step = make_step(tx, shardings(params), shardings(state))
    for k in range(start, start + count):
        params, state = step(params, state, _global(host_tokens(k), data_parallel(mesh)))
    return params, state
