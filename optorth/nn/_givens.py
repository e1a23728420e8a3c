"""Givens orthogonal fine-tuning (GOFT) and its quasi-Givens relaxation (qGOFT).

Ma et al., "Parameter Efficient Quasi-Orthogonal Fine-Tuning via Givens Rotation"
(ICML 2024, arXiv 2404.04316). The input transform is a product of ``d - 1`` plane rotations
(``d = in_features``) arranged in ``ceil(log2 d)`` layers of disjoint planes, applied with static
slices, reshapes and elementwise products on the last axis (no gather, ``O(d)`` work per row).

Pairing (paper Eq. 3, same as the authors' code). Layer ``l = 0, 1, ...`` has stride
``s = 2**l``; the coordinates still active are the multiples of ``s`` below ``d``, and the layer
rotates the planes ``(2k s, (2k+1) s)`` for ``k < floor(n_l / 2)``, ``n_l = ceil(d / s)``. When
``n_l`` is odd, the last active coordinate sits the layer out and is carried to the next one
(the authors' code does this; the paper only writes the power-of-two case). Every rotation
retires one active coordinate, so there are exactly ``d - 1`` rotations in ``ceil(log2 d)``
layers for every ``d >= 2``. Parameters are stored layer after layer, in ``k`` order.

Product and sign. The paper writes ``W* = R W`` with ``R = P_1 P_2 ... P_L`` (``P_1`` the
stride-1 layer) and ``G(i, j; theta)`` with entries ``g_ii = g_jj = cos``, ``g_ij = -sin``,
``g_ji = sin``. Flax kernels are ``(in, out)``, so ``M = R`` and the layer computes
``x M = x P_1 P_2 ... P_L``: the stride-1 layer acts first on a row vector.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from optorth._checks import check_bool, check_positive_int
from optorth.nn._adapter import AdapterParam, OrthogonalAdapter, frozen_copy

_WHO = "GivensLinear"


def givens_pairs(d: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """The planes each parallel layer rotates, for ``d >= 2`` features.

    Returns:
        One tuple per layer (``ceil(log2 d)`` of them, stride-1 layer first) of ``(i, j)``
        planes, ``j = i + 2**layer``; ``d - 1`` planes in all, disjoint within a layer.
    """
    d = check_positive_int("givens_pairs", "d", d)
    if d < 2:
        raise ValueError(f"givens_pairs: d={d} has no plane to rotate; pass d >= 2")
    layers, stride, active = [], 1, d
    while active > 1:
        layers.append(tuple((2 * k * stride, (2 * k + 1) * stride) for k in range(active // 2)))
        stride, active = 2 * stride, (active + 1) // 2
    return tuple(layers)


def _rotation_blocks(angles):
    """``G(i, j; theta)`` restricted to its plane: ``[[cos, -sin], [sin, cos]]`` per angle."""
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    return jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)


def _rotate(x, blocks):
    """``x P_1 P_2 ... P_L`` for the ``n = x.shape[-1]`` active coordinates, stride-1 first.

    The stride-1 layer pairs neighbours ``(2k, 2k + 1)``; a plane with block ``B`` gives
    ``y_i = x_i B_00 + x_j B_10`` and ``y_j = x_i B_01 + x_j B_11``. Each ``y_j`` is final, and
    the ``y_i`` (plus the odd last coordinate, which sits the layer out) are exactly the
    coordinates the next layers pair as neighbours, so they recurse on the rest of the blocks.
    Only static slices, reshapes and elementwise products: no gather, ``O(n)`` work in all.
    """
    n = x.shape[-1]
    if n == 1:
        return x
    half, lead = n // 2, x.shape[:-1]
    pairs = x[..., :2 * half].reshape(*lead, half, 2)
    first, second = pairs[..., 0], pairs[..., 1]
    layer = blocks[:half]
    kept = first * layer[:, 0, 0] + second * layer[:, 1, 0]
    done = first * layer[:, 0, 1] + second * layer[:, 1, 1]
    if n % 2:
        kept = jnp.concatenate([kept, x[..., -1:]], axis=-1)
    rest = _rotate(kept, blocks[half:])
    woven = jnp.stack([rest[..., :half], done], axis=-1).reshape(*lead, 2 * half)
    return jnp.concatenate([woven, rest[..., half:]], axis=-1) if n % 2 else woven


@jax.jit
def _apply_layers(x, blocks):
    """``x P_1 P_2 ... P_L`` on the last axis of float32 ``x`` (``blocks``: ``(d - 1, 2, 2)``)."""
    return _rotate(x, blocks)


class GivensLinear(OrthogonalAdapter):
    """GOFT / qGOFT: an ``nnx.Linear`` behind ``d - 1`` parallel (quasi-)Givens rotations.

    Strict mode (GOFT) learns one angle per rotation, ``givens_angles`` of shape ``(d - 1,)``,
    and the transform is exactly orthogonal with determinant +1. The angle is the paper's
    ``theta`` itself (the authors' code uses ``pi * tanh(param)``, which only bounds it).

    Quasi mode (qGOFT, paper Eq. 5) replaces each rotation by a free 2x2 matrix
    ``[[a1, b1], [a2, b2]] = (alpha, beta)``, ``givens_blocks`` of shape ``(d - 1, 2, 2)``
    (four parameters per plane, no angles), whose column norms and relative angle are free;
    `orthogonality_penalty` returns the paper's soft regularizer
    ``sum_i <alpha_i, beta_i>^2``, to be added to the loss with a strength ``lambda``
    (the paper tunes it in ``[0.001, 0.05]``).

    Both start at the identity (zero angles, identity blocks, paper Appendix B), so the
    wrapped layer reproduces the original output exactly. See the module docstring for the
    planes each layer rotates.

    Args:
        base: the pretrained ``nnx.Linear`` to adapt; needs ``in_features >= 2``.
        quasi: ``False`` for GOFT, ``True`` for qGOFT.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from optorth.nn import GivensLinear
      >>> layer = GivensLinear(nnx.Linear(12, 4, rngs=nnx.Rngs(0)))
      >>> layer.givens_angles.shape, layer.num_layers
      ((11,), 4)
      >>> bool(jnp.all(layer(jnp.ones((2, 12))) == layer.base(jnp.ones((2, 12)))))
      True
    """

    def __init__(self, base: nnx.Linear, *, quasi: bool = False):
        self.base = frozen_copy(_WHO, base)
        self.quasi = check_bool(_WHO, "quasi", quasi)
        d = self.base.in_features
        if d < 2:
            raise ValueError(f"{_WHO}: in_features={d} leaves no plane to rotate; Givens "
                             "adapters need in_features >= 2 (leave this layer frozen)")
        count = d - 1
        if self.quasi:
            self.givens_blocks = AdapterParam(
                jnp.tile(jnp.eye(2, dtype=jnp.float32), (count, 1, 1)))
        else:
            self.givens_angles = AdapterParam(jnp.zeros((count,), jnp.float32))

    @property
    def num_layers(self) -> int:
        """``ceil(log2 in_features)``: the parallel layers of disjoint rotations."""
        return (self.in_features - 1).bit_length()

    def blocks(self):
        """The ``(d - 1, 2, 2)`` float32 blocks of every rotation, layer after layer."""
        if self.quasi:
            return self.givens_blocks[...].astype(jnp.float32)
        return _rotation_blocks(self.givens_angles[...].astype(jnp.float32))

    def transform_inputs(self, x):
        """``x M`` on the last axis, in float32, returned in ``x``'s dtype."""
        return _apply_layers(x.astype(jnp.float32), self.blocks()).astype(x.dtype)

    def transform(self):
        """The dense ``(in, in)`` float32 matrix ``M = P_1 P_2 ... P_L``."""
        return _apply_layers(jnp.eye(self.in_features, dtype=jnp.float32), self.blocks())

    def orthogonality_penalty(self):
        """qGOFT's ``sum_i <alpha_i, beta_i>^2`` over the blocks' columns; 0 in strict mode."""
        if not self.quasi:
            return jnp.zeros((), jnp.float32)
        blocks = self.blocks()
        inner = jnp.sum(blocks[:, :, 0] * blocks[:, :, 1], axis=-1)
        return jnp.sum(inner ** 2)
