"""HRA: a chain of Householder reflections of a frozen ``nnx.Linear``'s input space.

Yuan, Wu, Li, Li, Zhang, "Bridging The Gap between Low-rank and Orthogonal Adaptation via
Householder Reflection Adaptation" (NeurIPS 2024, arXiv 2405.17484). ``r`` trainable vectors
``u_1, ..., u_r`` (the columns of ``hra_vectors``, shape ``(in, r)``) define the reflections
``H_i = I - 2 u_i u_iᵀ / ‖u_i‖²`` and the orthogonal matrix

    ``H = H_1 H_2 ⋯ H_r``;

the adapted layer computes ``y = (x H) W + b`` (kernel ``H W``): a row ``x`` meets ``H_1``
first. Being orthogonal, ``H - I = -Û T Ûᵀ`` (compact WY form, ``T`` upper triangular ``r × r``)
has rank at most ``r``, so ``H W = W + (H - I) W`` is also a rank-``r`` update of ``W``.
(PEFT stores the same ``(in, r)`` vectors for a PyTorch ``(out, in)`` weight and applies
``W_torch H_1 ⋯ H_r``; on the Flax ``(in, out)`` kernel that is this layer with the columns in
reverse order.)

The vectors start in equal pairs (``u_{2j-1} = u_{2j}``; ``H_i H_i = I``), so the layer starts at
the identity; that needs an even ``r``. Each pair is applied as one step,
``H_a H_b = I - 2 H_a K`` with ``e = b̂ - â`` and ``K = â eᵀ + e âᵀ + e eᵀ`` (the same product,
written so that equal vectors give ``e = 0`` exactly and the output equals the input bit for
bit), in ``O(r·d)`` per row; ``H`` itself is formed only by `HRALinear.transform`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from optorth._checks import check_positive_int
from optorth.nn._adapter import AdapterParam, OrthogonalAdapter, frozen_copy

#: A vector shorter than this is divided by it instead of its norm, so a zero vector gives
#: ``H_i = I`` (no reflection) and finite gradients instead of NaN; below the floor ``H_i`` is
#: no longer orthogonal (vectors start at norm 1).
NORM_FLOOR = 1e-6


def _unit_columns(vectors):
    """``vectors`` (float32) with each column divided by ``max(‖column‖, NORM_FLOOR)``."""
    squared = jnp.sum(vectors * vectors, axis=0, keepdims=True)
    return vectors * jax.lax.rsqrt(jnp.maximum(squared, NORM_FLOOR ** 2))


def _dot(z, v):
    """``z · v`` over the last axis, kept as a trailing axis (exact float32, no matmul unit)."""
    return jnp.sum(z * v, axis=-1, keepdims=True)


def _reflect_pair(z, pair):
    """``z H_a H_b`` for unit ``â`` and ``e = b̂ - â`` (``z`` rows on the last axis)."""
    a, e = pair
    w = z - 2.0 * _dot(z, a) * a                                   # z H_a
    wk = _dot(w, a) * e + _dot(w, e) * (a + e)                      # w K
    return z - 2.0 * wk, None


def _pairs(vectors):
    """``(â, e)`` for each pair ``(a, b)`` of columns, ``e = b̂ - â``, as ``(r/2, d)`` rows.

    ``e`` is built from ``b - a`` and ``‖a‖² - ‖b‖² = -(b - a)·(b + a)``, so equal columns give
    ``e = 0`` exactly however the compiler orders the sums of the two norms; of its two equal
    forms ``sa (b - a) + (sb - sa) b`` and ``sb (b - a) + (sb - sa) a`` it takes the one without
    cancellation (``s = 1 / max(‖·‖, NORM_FLOOR)``).
    """
    a, b = vectors[:, 0::2], vectors[:, 1::2]
    step = b - a
    floor = NORM_FLOOR ** 2
    na, nb = jnp.sum(a * a, axis=0), jnp.sum(b * b, axis=0)
    qa, qb = jnp.maximum(na, floor), jnp.maximum(nb, floor)
    unfloored = (na > floor) & (nb > floor)
    diff = jnp.where(unfloored, -jnp.sum(step * (a + b), axis=0), qa - qb)   # qa - qb
    sa, sb = jax.lax.rsqrt(qa), jax.lax.rsqrt(qb)
    ds = diff * jnp.square(sa * sb) / (sa + sb)                       # sb - sa
    e = jnp.where(qa >= qb, sa * step + ds * b, sb * step + ds * a)
    return (sa * a).T, e.T


@jax.jit
def _reflect(x, vectors):
    """``x H_1 ⋯ H_r`` (float32) for the columns of ``vectors``, two reflections a step."""
    pairs = _pairs(vectors.astype(jnp.float32))
    z, _ = jax.lax.scan(_reflect_pair, x.astype(jnp.float32), pairs)
    return z


@jax.jit
def _penalty(vectors):
    """``‖I - ÛᵀÛ‖_F²`` for the floored unit columns ``Û`` of ``vectors``."""
    units = _unit_columns(vectors.astype(jnp.float32))
    gram = jnp.matmul(units.T, units, precision=jax.lax.Precision.HIGHEST)
    return jnp.sum(jnp.square(jnp.eye(units.shape[1], dtype=jnp.float32) - gram))


@jax.jit(static_argnums=(1, 2))
def _paired_start(key, width, rank):
    """``rank`` unit-norm Gaussian columns of length ``width``, each repeated once."""
    half = jax.random.normal(key, (width, rank // 2), jnp.float32)
    half = half / jnp.linalg.norm(half, axis=0, keepdims=True)
    return jnp.repeat(half, 2, axis=1)


class HRALinear(OrthogonalAdapter):
    """A frozen ``nnx.Linear`` whose inputs pass through ``r`` Householder reflections.

    Trains ``hra_vectors`` (`AdapterParam`, float32 ``(in_features, rank)``, ``r·d``
    numbers); the layer computes ``base(x H)`` with ``H = H_1 ⋯ H_r`` (see the module docstring)
    in ``O(r·d)`` per row, never forming ``H``. Add ``λ * layer.orthogonality_penalty()`` to the
    loss for the paper's regularizer.

    Args:
        base: the pretrained ``nnx.Linear``; copied with a frozen kernel and bias.
        rank: the number of reflections ``r``: even, ``2 <= r <= in_features``.
        rngs: draws the initial vectors (``rngs.params()``), unit-norm Gaussian directions
            repeated in pairs.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from optorth.nn import HRALinear
      >>> layer = HRALinear(nnx.Linear(8, 4, rngs=nnx.Rngs(0)), rank=4, rngs=nnx.Rngs(1))
      >>> layer.hra_vectors.shape
      (8, 4)
      >>> h = layer.transform()
      >>> bool(jnp.allclose(h.T @ h, jnp.eye(8), atol=1e-5))
      True
    """

    def __init__(self, base: nnx.Linear, *, rank: int = 8, rngs: nnx.Rngs):
        who = type(self).__name__
        rank = check_positive_int(who, "rank", rank)
        if not isinstance(rngs, nnx.Rngs):
            raise ValueError(f"{who}: rngs must be an nnx.Rngs, got {type(rngs).__name__}; "
                             "pass rngs=nnx.Rngs(0)")
        self.base = frozen_copy(who, base)
        width = self.in_features
        if width < 2:
            raise ValueError(f"{who}: in_features={width}; the identity start needs a pair of "
                             "reflections, so HRA needs in_features >= 2")
        if rank % 2:
            even = " or ".join(f"rank={r}" for r in (rank - 1, rank + 1) if 2 <= r <= width)
            raise ValueError(
                f"{who}: rank={rank} is odd; the identity start repeats each vector once "
                f"(u_2j-1 = u_2j, whose reflections cancel), which needs an even rank; "
                f"use {even or f'an even rank <= {width}'}")
        if rank > width:
            raise ValueError(
                f"{who}: rank={rank} exceeds in_features={width} (r > d); any orthogonal "
                f"{width}x{width} matrix is a product of at most {width} reflections, so "
                f"choose an even rank <= {width}")
        self.hra_vectors = AdapterParam(_paired_start(rngs.params(), width, rank))

    @property
    def rank(self) -> int:
        return self.hra_vectors.get_value().shape[1]

    def unit_vectors(self):
        """``Û``: the columns of ``hra_vectors`` divided by their norms (float32, floored)."""
        return _unit_columns(self.hra_vectors.get_value().astype(jnp.float32))

    def transform_inputs(self, x):
        """``x H = x H_1 H_2 ⋯ H_r`` on the last axis, in float32, returned in ``x``'s dtype."""
        return _reflect(x, self.hra_vectors.get_value()).astype(x.dtype)

    def transform(self):
        """The dense orthogonal ``(in, in)`` matrix ``H`` (float32), for merging and tests."""
        return self.transform_inputs(jnp.eye(self.in_features, dtype=jnp.float32))

    def orthogonality_penalty(self):
        """``‖I - ÛᵀÛ‖_F²`` (float32 scalar), the paper's regularizer without its ``λ``.

        Zero when the vectors are orthogonal (then ``H = I - 2 Û Ûᵀ`` negates their span); at
        the paired start each pair contributes 2, so it begins at ``>= rank``. Use
        ``loss = task_loss + λ * sum(layer.orthogonality_penalty() for each HRA layer)``.
        """
        return _penalty(self.hra_vectors.get_value())
