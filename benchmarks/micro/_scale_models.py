"""Parameter shapes, routing and mesh layouts of the models that ``scale_out`` compiles.

Every parameter is a ``jax.ShapeDtypeStruct`` (float32, Flax layout): nothing is allocated.

* ``gpt2_small`` / ``gpt2_medium``: 12 layers of width 768 / 24 of width 1024, MLP 4d, fused
  QKV kernel (d, 3d), token embedding 50257 × d and position embedding 1024 × d (tied head).
  optorth's default routing sends the embeddings to the fallback (AdamW) and the 2-D kernels to
  Newton–Schulz.
* ``gpt2_stacked``: GPT-2 small with the layers stacked (scanned) into one leaf per role,
  kernels ``(12, d, out)`` routed with ``MatrixSpec.stacked()`` (the layer axis is a batch axis).
* ``moe_fsdp`` / ``moe_ep``: 4 GPT-2-small-width layers whose MLP is a mixture of E = 8 experts,
  kernels ``(E, d, 4d)`` and ``(E, 4d, d)`` (routed with ``MatrixSpec.stacked()``) and a router
  ``(d, E)``; ``moe_fsdp`` shards the expert kernels like any other weight, ``moe_ep`` shards
  them on the expert axis over the ``fsdp`` mesh axis (expert parallelism), so each device
  already holds whole expert matrices.

Layouts (`partition_specs`), by mesh axis name: ``fsdp`` takes the largest axis of a leaf
it divides (``rule="first"``: the first such axis instead), ``tensor`` then the largest remaining
axis it divides (rank ≥ 2), ``replica`` shards nothing. ``optax.contrib.muon`` is routed like
optorth (`optax_dimension_numbers`): the same leaves, the same reduction/output axes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

import optorth
from optorth import MatrixSpec

VOCAB, CONTEXT, EXPERTS = 50257, 1024, 8


def _leaf(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _dense(fan_in, fan_out, *stack):
    return {"kernel": _leaf(*stack, fan_in, fan_out), "bias": _leaf(*stack, fan_out)}


def _norm(d, *stack):
    return {"scale": _leaf(*stack, d), "bias": _leaf(*stack, d)}


def _embeddings(d):
    return {"wte": {"embedding": _leaf(VOCAB, d)}, "wpe": {"embedding": _leaf(CONTEXT, d)},
            "ln_f": _norm(d)}


def _block(d, *stack):
    return {"ln_1": _norm(d, *stack), "ln_2": _norm(d, *stack),
            "attn": {"c_attn": _dense(d, 3 * d, *stack), "c_proj": _dense(d, d, *stack)},
            "mlp": {"c_fc": _dense(d, 4 * d, *stack), "c_proj": _dense(4 * d, d, *stack)}}


def gpt2_shapes(layers: int, d: int) -> dict:
    """GPT-2 with ``layers`` blocks of width ``d``, one subtree per layer."""
    return {**_embeddings(d), "h": {str(i): _block(d) for i in range(layers)}}


def gpt2_stacked_shapes(layers: int, d: int) -> dict:
    """GPT-2 with every block's leaves stacked on a leading layer axis."""
    return {**_embeddings(d), "h": _block(d, layers)}


def moe_shapes(layers: int, d: int, experts: int = EXPERTS) -> dict:
    """GPT-2-width layers with a mixture-of-experts MLP (experts on the leading axis)."""
    def layer():
        block = _block(d)
        block["mlp"] = {"router": {"kernel": _leaf(d, experts)},
                        "w_in": _leaf(experts, d, 4 * d), "w_out": _leaf(experts, 4 * d, d)}
        return block
    return {**_embeddings(d), "h": {str(i): layer() for i in range(layers)}}


@dataclasses.dataclass(frozen=True)
class Model:
    """A parameter tree and how it is routed and sharded.

    ``rules``: optorth routing rules for the leaves default routing leaves undecided;
    ``expert_leaf``: which leaves are sharded on their leading (expert) axis, given the leaf
    path (``keys joined by /``).
    """

    name: str
    params: Any
    rules: tuple = ()
    expert_leaf: Callable[[str], bool] = lambda path: False

    @property
    def param_bytes(self) -> int:
        """P: the bytes of every parameter."""
        return _bytes(jax.tree.leaves(self.params))

    @property
    def matrix_bytes(self) -> int:
        """Pₘ: the bytes of the parameters optorth routes to the matrix path."""
        specs = optorth.route(self.params, list(self.rules) or None)
        flat = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, MatrixSpec))
        return _bytes(x for x, s in zip(jax.tree.leaves(self.params), flat, strict=True)
                      if isinstance(s, MatrixSpec))


def _bytes(leaves) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves)


_STACKED = ((r"^h/(attn|mlp)/\w+/kernel$", MatrixSpec.stacked()),)
_EXPERTS = ((r"/mlp/w_(in|out)$", MatrixSpec.stacked()),)


def _is_expert(path: str) -> bool:
    return path.endswith(("/mlp/w_in", "/mlp/w_out"))


MODELS: dict[str, Callable[[], Model]] = {
    "gpt2_small": lambda: Model("gpt2_small", gpt2_shapes(12, 768)),
    "gpt2_medium": lambda: Model("gpt2_medium", gpt2_shapes(24, 1024)),
    "gpt2_stacked": lambda: Model("gpt2_stacked", gpt2_stacked_shapes(12, 768), _STACKED),
    "moe_fsdp": lambda: Model("moe_fsdp", moe_shapes(4, 768), _EXPERTS),
    "moe_ep": lambda: Model("moe_ep", moe_shapes(4, 768), _EXPERTS, _is_expert),
}


# ----------------------------------------------------------------------------- layouts
def path_string(path) -> str:
    """A key path as ``a/b/0/c`` (dict keys, sequence indices and attribute names)."""
    parts = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    return "/".join(map(str, parts))


def leaf_spec(shape, mesh_shape: dict[str, int], *, expert: bool = False, vector: bool = False,
              rule: str = "largest") -> P:
    """One leaf's ``PartitionSpec`` on a mesh with axes among ``replica``/``fsdp``/``tensor``.

    ``fsdp`` takes the largest axis it divides (``rule="first"``: the first), or the leading
    axis of an ``expert`` leaf; ``tensor`` takes the larger of the last two axes left free that
    it divides, except on ``vector`` leaves (biases and norm scales, stacked or not).

    Raises:
      ValueError: an expert leaf whose expert axis the ``fsdp`` axis does not divide (expert
        parallelism needs whole experts on each device).
    """
    entries: list[str | None] = [None] * len(shape)
    fsdp, tensor = mesh_shape.get("fsdp", 1), mesh_shape.get("tensor", 1)
    if expert:
        if shape[0] % fsdp:
            raise ValueError(f"expert axis of size {shape[0]} is not divisible by fsdp={fsdp}; "
                             f"expert sharding needs whole experts per device")
        entries[0] = "fsdp" if fsdp > 1 else None
    elif fsdp > 1:
        order = (sorted(range(len(shape)), key=lambda a: -shape[a]) if rule == "largest"
                 else range(len(shape)))
        axis = next((a for a in order if shape[a] % fsdp == 0), None)
        if axis is not None:
            entries[axis] = "fsdp"
    if tensor > 1 and not vector and len(shape) >= 2:
        free = sorted((a for a in range(len(shape) - 2, len(shape)) if entries[a] is None),
                      key=lambda a: -shape[a])
        axis = next((a for a in free if shape[a] % tensor == 0), None)
        if axis is not None:
            entries[axis] = "tensor"
    return P(*entries)


def partition_specs(model: Model, mesh_shape: dict[str, int], rule: str = "largest"):
    """The ``PartitionSpec`` of every parameter of ``model`` (see the module docstring)."""
    def spec(path, x):
        name = path_string(path)
        return leaf_spec(x.shape, mesh_shape, rule=rule, expert=model.expert_leaf(name),
                         vector=name.endswith(("bias", "scale")))

    return jax.tree_util.tree_map_with_path(spec, model.params)


# ----------------------------------------------------------------------------- optimizers
def optax_dimension_numbers(model: Model):
    """``optax.contrib.muon`` dimension numbers that route like ``optorth.route``."""
    def dims(target):
        if not isinstance(target, MatrixSpec):
            return None
        return optax.contrib.MuonDimensionNumbers(target.reduction, target.output)

    specs = optorth.route(model.params, list(model.rules) or None)
    return jax.tree.map(dims, specs, is_leaf=lambda x: isinstance(x, MatrixSpec) or x == "fallback")


def _muon_knowing_layouts(m: Model, placed) -> optax.GradientTransformation:
    """optorth.muon told the parameters' layouts (``Distribution.for_params``), as a user of
    automatic mesh axes does; off a mesh the plain default."""
    policy = optorth.Distribution() if placed is None else optorth.Distribution.for_params(placed)
    return optorth.muon(rules=list(m.rules) or None, ns=optorth.NewtonSchulz(distribute=policy))


def _muon_within_budget(m: Model, placed) -> optax.GradientTransformation:
    """``optorth.muon+layouts`` with a per-device memory budget for gathered matrices
    (``MEMORY_BUDGET``, ``scale_out --budget-mib``): the stacks move and iterate one piece
    after another."""
    policy = (optorth.Distribution(memory_budget=MEMORY_BUDGET) if placed is None else
              optorth.Distribution.for_params(placed, memory_budget=MEMORY_BUDGET))
    return optorth.muon(rules=list(m.rules) or None, ns=optorth.NewtonSchulz(distribute=policy))


MEMORY_BUDGET = 16 * 2**20  # bytes; scale_out --budget-mib sets it in each child

#: name -> (model, the parameters as sharded ``ShapeDtypeStruct``s or None) -> transformation
OPTIMIZERS: dict[str, Callable[[Model, Any], optax.GradientTransformation]] = {
    "optorth.muon": lambda m, placed: optorth.muon(rules=list(m.rules) or None),
    "optorth.muon+layouts": _muon_knowing_layouts,
    "optorth.muon+budget": _muon_within_budget,
    "optax.contrib.muon": lambda m, placed: optax.contrib.muon(
        0.02, muon_weight_dimension_numbers=optax_dimension_numbers(m)),
    "optax.adamw": lambda m, placed: optax.adamw(1e-3),
}
