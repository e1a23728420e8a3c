"""What every orthogonal fine-tuning adapter shares: variable types, the frozen base, merging.

An adapter wraps a pretrained ``nnx.Linear`` whose kernel ``W`` (``(in, out)``) is held fixed
and learns a transform ``M`` of its input space, so that the adapted layer computes
``y = (x M) W + b``, i.e. the kernel ``M W`` (Qiu et al., "Controlling Text-to-Image Diffusion
by Orthogonal Finetuning", arXiv 2306.07280, write ``W_OFT = R W_0``). Adapters apply ``M`` to
the input (input-centric; Qiu et al., "Orthogonal Finetuning Made Scalable",
arXiv 2506.19847) and never form ``M W`` in the forward pass; `OrthogonalAdapter.merge`
forms it once, for inference.

Variable types decide what an optimizer sees:

* `Frozen`: the wrapped layer's kernel and bias. Not an ``nnx.Param``, so
  ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` trains everything except the frozen bases.
* `AdapterParam`: an ``nnx.Param`` subclass; ``wrt=AdapterParam`` trains the
  adapters alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from optorth._checks import check_positive_int


class Frozen(nnx.Variable):
    """A pretrained weight held fixed by an adapter (not an ``nnx.Param``)."""


class AdapterParam(nnx.Param):
    """A trainable parameter of an orthogonal fine-tuning adapter."""


def frozen_copy(who: str, base) -> nnx.Linear:
    """A copy of the ``nnx.Linear`` ``base`` whose kernel and bias are `Frozen`."""
    if not isinstance(base, nnx.Linear):
        raise ValueError(
            f"{who}: expected an nnx.Linear to adapt, got {type(base).__name__}; wrap each "
            "dense layer on its own (optorth.nn.adapt(model, ...) finds them)")
    if isinstance(base.kernel, Frozen):
        raise ValueError(f"{who}: this nnx.Linear is already frozen by another adapter; "
                         "adapt the original layer, or merge() first")
    frozen = nnx.clone(base)
    frozen.kernel = Frozen(base.kernel.get_value())
    if base.bias is not None:
        frozen.bias = Frozen(base.bias.get_value())
    return frozen


def check_width(who: str, name: str, value: int, width: int, what: str) -> int:
    """``value`` as a positive int no larger than ``width`` (``what`` names the width)."""
    check_positive_int(who, name, value)
    if value > width:
        raise ValueError(f"{who}: {name}={value} exceeds {what} {width}; choose "
                         f"{name} <= {width}")
    return int(value)


class OrthogonalAdapter(nnx.Module):
    """Base class: a frozen ``nnx.Linear`` (``self.base``) behind a learned input transform.

    Subclasses implement `transform_inputs` (``x ↦ x M`` on the last axis, never forming
    ``M W``) and `transform` (the dense ``(in, in)`` matrix ``M``, for merging and tests).
    """

    base: nnx.Linear

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def transform_inputs(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: inputs have {x.shape[-1]} features on "
                             f"the last axis, the layer takes {self.in_features}")
        return self.base(self.transform_inputs(x))

    def adapted_kernel(self):
        """The kernel ``M W`` the adapted layer applies, in the base kernel's dtype."""
        kernel = self.base.kernel.get_value()
        product = jnp.matmul(self.transform().astype(jnp.float32),
                             kernel.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
        return product.astype(kernel.dtype)

    def merge(self) -> nnx.Linear:
        """A plain ``nnx.Linear`` (``nnx.Param`` kernel and bias) equal to the adapted layer."""
        merged = nnx.clone(self.base)
        merged.kernel = nnx.Param(self.adapted_kernel())
        if self.base.bias is not None:
            merged.bias = nnx.Param(self.base.bias.get_value())
        return merged
