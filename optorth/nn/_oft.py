"""OFTv2: block-diagonal Cayley–Neumann rotations applied to a layer's input.

Qiu, Liu, Weller and Schölkopf, "Orthogonal Finetuning Made Scalable" (arXiv 2506.19847).
The adapted kernel is ``R W`` with ``R = Diag(R_1, …, R_r)``, each ``R_i`` (``b × b``) the
Cayley–Neumann map of a skew-symmetric ``Q_i`` stored as its ``b (b − 1) / 2``
strictly-upper-triangular entries. The forward pass is input-centric, ``base(x R)``, with
``x R`` computed block by block on ``x`` reshaped to ``(..., r, b)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jax import lax

from optorth._checks import check_bool, check_positive_int
from optorth.nn._adapter import AdapterParam, OrthogonalAdapter, check_width, frozen_copy
from optorth.nn._cayley import cayley_exact, cayley_neumann, packed_size, skew_from_packed

_HIGHEST = lax.Precision.HIGHEST


def _nearest_divisors(width: int, value: int) -> str:
    """The divisors ``>= 2`` of ``width`` closest to ``value`` below and above, as text."""
    divisors = [d for d in range(2, width + 1) if width % d == 0]
    below = [d for d in divisors if d < value][-1:]
    above = [d for d in divisors if d > value][:1]
    return " or ".join(str(d) for d in below + above)


def _check_block_size(who: str, block_size, width: int) -> int:
    check_positive_int(who, "block_size", block_size)
    if block_size < 2:
        raise ValueError(f"{who}: block_size={block_size} gives 1 × 1 blocks, whose only "
                         "rotation is the identity; choose block_size >= 2")
    block_size = check_width(who, "block_size", block_size, width, "in_features")
    if width % block_size:
        raise ValueError(f"{who}: block_size={block_size} does not divide in_features="
                         f"{width}; choose a divisor such as "
                         f"{_nearest_divisors(width, block_size)}")
    return block_size


class OFTLinear(OrthogonalAdapter):
    """An ``nnx.Linear`` adapted by a block-diagonal (near-)orthogonal input rotation (OFTv2).

    Computes ``y = (x R) W + b`` with ``W``, ``b`` frozen and ``R = Diag(R_1, …, R_r)``,
    ``R_i = (I + Q_i)(I + Q_i + … + Q_i^k)`` (Cayley–Neumann, ``k = neumann_terms``) or the
    exact Cayley transform ``(I + Q_i)(I − Q_i)^{-1}`` when ``exact=True``. Starts at
    ``Q = 0``, i.e. ``R = I``. The truncation is orthogonal only approximately:
    ``‖R_iᵀR_i − I‖₂ ≤ 2q^{k+1} + q^{2(k+1)}`` with ``q = ‖Q_i‖₂`` (``q^{2(k+1)}`` exactly
    when ``k`` is even and ``q ≤ 1``); see `orthogonality_error`.

    Args:
      base: the pretrained ``nnx.Linear`` (copied; the copy's kernel and bias are frozen).
      block_size: ``b``, the side of each rotation block; must divide ``in_features``.
      neumann_terms: ``k``, the number of Neumann terms after the identity. Even values are
        much closer to orthogonal than the odd value above them (the first-order error
        cancels: at ``q = 0.3``, ``k = 4`` deviates by 6e-6 and ``k = 5`` by 1.5e-3), hence
        the default 4.
      exact: use the exact Cayley transform (a linear solve per block) instead.

    Attributes:
      oft_skew: ``(in_features // b, b (b − 1) / 2)`` float32, the strictly upper triangles of
        the skew-symmetric generators ``Q_i`` read row by row (an `AdapterParam`).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from optorth.nn import OFTLinear
      >>> layer = OFTLinear(nnx.Linear(8, 4, rngs=nnx.Rngs(0)), block_size=4)
      >>> layer.oft_skew.shape, layer.num_blocks
      ((2, 6), 2)
      >>> bool(jnp.all(layer.merge().kernel[...] == layer.base.kernel[...]))
      True
    """

    def __init__(self, base: nnx.Linear, *, block_size: int = 32, neumann_terms: int = 4,
                 exact: bool = False):
        who = "OFTLinear"
        self.base = frozen_copy(who, base)
        self.block_size = _check_block_size(who, block_size, base.in_features)
        self.neumann_terms = check_positive_int(who, "neumann_terms", neumann_terms)
        self.exact = check_bool(who, "exact", exact)
        blocks = base.in_features // self.block_size
        self.oft_skew = AdapterParam(
            jnp.zeros((blocks, packed_size(self.block_size)), jnp.float32))

    @property
    def num_blocks(self) -> int:
        return self.in_features // self.block_size

    def rotation_blocks(self):
        """The ``(r, b, b)`` float32 blocks ``R_i``."""
        skew = skew_from_packed(self.oft_skew[...].astype(jnp.float32), self.block_size)
        if self.exact:
            return cayley_exact(skew)
        return cayley_neumann(skew, self.neumann_terms)

    def transform(self):
        """The dense block-diagonal ``(in, in)`` float32 matrix ``R`` (for merging and tests)."""
        blocks = self.rotation_blocks()
        eye = jnp.eye(self.num_blocks, dtype=blocks.dtype)
        return jnp.einsum("rs,rbc->rbsc", eye, blocks).reshape(
            self.in_features, self.in_features)

    def transform_inputs(self, x):
        """``x R`` on the last axis, block by block (``R`` is never formed densely).

        Computed in float32; returned in ``x``'s dtype when that is floating.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"OFTLinear: inputs have {x.shape[-1]} features on the last "
                             f"axis, the layer takes {self.in_features}")
        split = x.astype(jnp.float32).reshape(x.shape[:-1] + (self.num_blocks, self.block_size))
        rotated = jnp.einsum("...rb,rbc->...rc", split, self.rotation_blocks(),
                             precision=_HIGHEST).reshape(x.shape)
        return rotated.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else rotated

    def weight_centric_call(self, x, *, dense: bool = False):
        """The same layer computed weight-centrically: form ``R W``, then ``x (R W) + b``.

        For cost comparisons with the input-centric ``__call__``. ``dense=True`` multiplies
        the dense block-diagonal ``R`` (``O(n d²)``, as the original OFT implementation);
        otherwise ``R W`` is formed block by block (``O(n d b)``).
        """
        check_bool("OFTLinear.weight_centric_call", "dense", dense)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"OFTLinear: inputs have {x.shape[-1]} features on the last "
                             f"axis, the layer takes {self.in_features}")
        kernel = self.base.kernel[...]
        if dense:
            product = jnp.matmul(self.transform(), kernel.astype(jnp.float32),
                                 precision=_HIGHEST)
        else:
            split = kernel.astype(jnp.float32).reshape(
                self.num_blocks, self.block_size, self.out_features)
            product = jnp.einsum("rbc,rcn->rbn", self.rotation_blocks(), split,
                                 precision=_HIGHEST).reshape(kernel.shape)
        return self._apply_kernel(x, product.astype(kernel.dtype))

    def _apply_kernel(self, x, kernel):
        """``x kernel + bias`` exactly as the wrapped ``nnx.Linear`` computes it."""
        base = self.base
        bias = base.bias[...] if base.bias is not None else None
        x, kernel, bias = base.promote_dtype((x, kernel, bias), dtype=base.dtype)
        extra = {}
        if base.preferred_element_type is not None:
            extra["preferred_element_type"] = base.preferred_element_type
        y = base.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                             precision=base.precision, **extra)
        return y if bias is None else y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))

    def orthogonality_error(self):
        """``max_i ‖R_iᵀR_i − I‖₂`` (spectral norm), a float32 scalar; 0 for exact rotations."""
        blocks = self.rotation_blocks()
        gram = jnp.matmul(jnp.swapaxes(blocks, -1, -2), blocks, precision=_HIGHEST)
        deviation = gram - jnp.eye(self.block_size, dtype=gram.dtype)
        return jnp.max(jnp.abs(jnp.linalg.eigvalsh(deviation)))
