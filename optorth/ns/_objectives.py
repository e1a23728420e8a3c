"""Differentiable objectives for fitting Newton–Schulz coefficient tables.

A table ``c`` of ``T`` rows ``(a_t, b_t, c_t)`` acts on each normalized singular value σ by
the composed odd quintic φ_c = p_T ∘ … ∘ p_1, p_t(x) = a_t x + b_t x³ + c_t x⁵ (Polar Express §2).
Everything here is a pure JAX function of ``c`` (a traced ``(T, 3)`` array), so ``jax.grad``
and optax fit it:

* `scalar_loss` (objective ``"scalar"``): on samples σ_i with weights w_i (a log-spaced
  grid on [σ_min, 1], which oversamples small σ, or recorded/sampled spectra)

      L = w_mean · Σ_i w_i |φ(σ_i) − 1| + w_max · max_{σ∈[σ_lo, σ_hi]} |φ(σ) − 1| + μ · P(c)

  where the max is exact (interval propagation, `interval_images`) and P penalizes
  sign flips and escapes (below).
* `band_loss` (objective ``"band"``, CANS-style): maximize the slope at zero
  φ′(0) = ∏ a_t subject to φ(σ) ∈ [1 − δ, 1 + δ] on [σ_min, 1], via the penalty

      L = −Σ_t log a_t + μ_band · relu(max |φ − 1| − 0.98δ)² / δ² + μ · P(c).

* `matrix_loss` (objective ``"matrix"``): on matrices X = U diag(s) Vᵀ run through the
  real engine (normalization, compute dtype, so bf16 round-off is part of the loss); the
  per-direction gain d_i = u_iᵀ NS(X) v_i replaces φ(σ_i):

      L = w_mean · mean_i |d_i − 1| + w_max · smoothmax_τ |d_i − 1| + μ · P(c).

The stability penalty P mirrors ``optorth.validate_schedule``: with [0, h_t] the exact image
of σ ∈ [0, 1/safety] after t steps, every step must keep its image non-negative (no sign
flip) and below the repelling fixed point τ_{t+1} of the next row (no escape):

    P(c) = 100 Σ_t relu(ε − min p_{t+1}[10⁻³h_t, h_t])² + Σ_{t<T} relu(h_t − (1 − m)·τ_{t+1})²

(ε = ``SIGN_FLOOR``, m = ``PENALTY_MARGIN``); candidates are accepted with the looser margin
``ESCAPE_MARGIN`` and must finally pass ``validate_schedule``.

References:
  Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application to the
  Muon Algorithm" (arXiv 2505.16932), §2: a schedule acts on each σ by its composed quintics.
  Cesista, You, Jordan, "Squeezing 1-2% efficiency gains out of Muon by optimizing the
  Newton-Schulz coefficients" (blog, Feb 2025): scalar loss on a σ grid with penalties.
  Grishina, Smirnov, Rakhuba, CANS (arXiv 2506.10935): maximize p′(0) within a δ-band.
  Boissin et al., Turbo-Muon (arXiv 2512.04632): matrix objective in bf16.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optorth.ns._engine import newton_schulz_table
from optorth.ns._schedule import quintic

#: Relative margin that fitted tables keep below the next row's repelling fixed point: an
#: image that touches it (as Polar Express's first row nearly does) lets bf16 round-off push
#: singular values past it, where later rows amplify them (measured: a 5-step table fitted
#: with a 1e-3 margin was exact in float32 and mapped some σ to 15 in bf16).
ESCAPE_MARGIN = 0.02
#: The penalty aims further inside (a soft penalty settles slightly outside its boundary).
PENALTY_MARGIN = 0.03
#: The band objective's penalty aims at this fraction of δ (so its optimum lies inside).
BAND_TARGET = 0.98
#: The penalty keeps every step's dips at or above this value (no sign flip, with room).
SIGN_FLOOR = 1e-4
#: Intermediate values are clipped to ±CAP inside the losses so that a bad iterate yields a
#: large finite loss (and a gradient through the penalties) rather than inf/NaN.
CAP = 4.0


class LossWeights(NamedTuple):
    """Weights of the terms of the fitting losses (see the module docstring)."""

    mean: float = 1.0
    worst: float = 1.0
    penalty: float = 1e4
    band: float = 100.0
    tau: float = 0.01


def composed_map(coeffs, sigma):
    """φ(σ) for a ``(T, 3)`` table, with intermediates clipped to ±CAP.

    Args:
      coeffs: ``(T, 3)`` array of rows (a, b, c).
      sigma: array of normalized singular values.

    Returns:
      ``(phi, trajectory)``: φ(σ) and the ``(T,) + sigma.shape`` unclipped iterates.
    """

    def step(x, row):
        y = quintic(row, x)
        return jnp.clip(y, -CAP, CAP), y

    return jax.lax.scan(step, sigma, coeffs)


def _critical_points(row):
    """The (up to two) x > 0 with p′(x) = a + 3bx² + 5cx⁴ = 0; NaN where there is none."""
    a, b, c = row[0], row[1], row[2]
    disc = 9 * b * b - 20 * a * c
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    safe_c = jnp.where(c == 0, 1.0, c)
    quad = jnp.stack([(-3 * b - root) / (10 * safe_c), (-3 * b + root) / (10 * safe_c)])
    lin = jnp.where(b == 0, -1.0, -a / (3 * jnp.where(b == 0, 1.0, b)))
    y = jnp.where(c == 0, jnp.stack([lin, lin]), quad)
    ok = (y > 0) & ((disc >= 0) | (c == 0))
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, y, 1.0)), jnp.nan)


def image(row, lo, hi):
    """The exact image p([lo, hi]) as ``(min, max)``: endpoints and interior critical points.

    Critical points outside [lo, hi] (or absent, NaN) are clipped onto an endpoint, which
    leaves the extremes unchanged, so the function is branch-free and differentiable. Values
    saturate at ±1e6 (anything that large has escaped anyway).
    """
    crit = _critical_points(row)
    crit = jnp.concatenate([crit, -crit])  # p′ is even: ±x are both critical
    crit = jnp.clip(jnp.where(jnp.isnan(crit), lo, crit), lo, hi)
    vals = quintic(row, jnp.concatenate([jnp.stack([lo, hi]), crit]))
    vals = jnp.clip(vals, -1e6, 1e6)
    return jnp.min(vals), jnp.max(vals)


def interval_images(coeffs, lo, hi):
    """Exact images [lo_t, hi_t] of [lo, hi] after each step t = 1..T, shape ``(T, 2)``.

    The image of an interval under a continuous map is an interval, so propagating the hull
    through the rows gives the exact image of the composition (not a bound).
    """

    def step(carry, row):
        new = image(row, carry[0], carry[1])
        return new, jnp.stack(new)

    init = (jnp.asarray(lo, coeffs.dtype), jnp.asarray(hi, coeffs.dtype))
    return jax.lax.scan(step, init, coeffs)[1]


def repelling_fixed_point(row):
    """τ: the largest positive root of p(x) = x; beyond it a row with p → +∞ diverges.

    ``p(x) − x = x((a − 1) + bx² + cx⁴)``. Returns ``inf`` when p(x) − x does not tend to +∞
    (c < 0, or c = 0 and b ≤ 0 with a ≤ 1) and 0 when every positive value grows.
    Mirrors ``optorth.ns._validate.repelling_fixed_point``.
    """
    a, b, c = row[0], row[1], row[2]
    disc = b * b - 4 * c * (a - 1)
    safe_c = jnp.where(c == 0, 1.0, c)
    y_quad = (-b + jnp.sqrt(jnp.maximum(disc, 0.0))) / (2 * safe_c)
    y_quad = jnp.where(disc >= 0, y_quad, 0.0)
    y_lin = jnp.where(b == 0, 0.0, (1 - a) / jnp.where(b == 0, 1.0, b))
    y = jnp.where(c == 0, y_lin, y_quad)
    tau = jnp.sqrt(jnp.maximum(y, 0.0))
    grows = (c > 0) | ((c == 0) & (b > 0)) | ((c == 0) & (b == 0) & (a > 1))
    return jnp.where(grows, tau, jnp.inf)


def stability_penalty(coeffs, safety=1.0, margin=PENALTY_MARGIN):
    """P(c): squared violations of 'no sign flip' and 'no escape' on σ ∈ [0, 1/safety].

    With [0, h_t] the image after t steps: the minimum of p_{t+1} on [10⁻³h_t, h_t] must stay
    above ``SIGN_FLOOR`` and h_t below (1 − margin)·τ_{t+1}.
    """
    images = interval_images(coeffs, 0.0, 1.0 / safety)
    tops = jnp.concatenate([jnp.full((1,), 1.0 / safety, coeffs.dtype), images[:-1, 1]])
    dips = jax.vmap(lambda row, h: image(row, 1e-3 * h, h)[0])(coeffs, tops)
    sign = jnp.sum(jax.nn.relu(SIGN_FLOOR - dips) ** 2)
    taus = jax.vmap(repelling_fixed_point)(coeffs[1:])
    limit = jnp.where(jnp.isfinite(taus), taus * (1 - margin), 1e6)
    escape = jnp.sum(jax.nn.relu(images[:-1, 1] - limit) ** 2)
    return 1e2 * sign + escape


def is_stable(coeffs, safety=1.0, sigma_min=1e-3, margin=0.0):
    """In-graph (jit-able) twin of ``validate_schedule(...).ok`` for a fixed-length table.

    True iff no step maps σ ∈ [0, 1/safety] below 0, no step's image passes
    (1 − margin)·τ of the next row (τ its repelling fixed point; ``margin=0`` is the
    validator's rule), and the image of [sigma_min, 1] / safety is finite with lo > 0.
    Returns ``(ok, max_error)`` with max_error = max |φ − 1| on [sigma_min, 1].
    """
    coeffs = jnp.asarray(coeffs, jnp.float32)
    images = interval_images(coeffs, 0.0, 1.0 / safety)
    taus = jax.vmap(repelling_fixed_point)(coeffs[1:])
    no_flip = jnp.all(images[:, 0] >= 0.0)
    no_escape = jnp.all(images[:-1, 1] <= taus * (1.0 - margin))
    band = interval_images(coeffs, sigma_min / safety, 1.0 / safety)[-1]
    finite = jnp.all(jnp.isfinite(coeffs)) & jnp.all(jnp.abs(band) < 1e6)
    ok = no_flip & no_escape & finite & (band[0] > 0.0)
    return ok, jnp.maximum(jnp.abs(band[0] - 1.0), jnp.abs(band[1] - 1.0))


def smooth_max(values, tau):
    """τ · log mean exp(v / τ): a smooth lower bound of max(v), within τ·log(N) of it."""
    n = values.size
    return tau * (jax.nn.logsumexp(values / tau) - jnp.log(n))


def scalar_loss(coeffs, sigma, weights, bounds, loss_weights: LossWeights, safety=1.0):
    """Objective ``"scalar"`` (module docstring). ``bounds`` = (σ_lo, σ_hi) for the exact max.

    Args:
      coeffs: ``(T, 3)`` table.
      sigma: ``(N,)`` normalized singular values (before the safety factor).
      weights: ``(N,)`` non-negative weights summing to 1.
      bounds: the interval whose exact worst-case error enters the loss.
      loss_weights: `LossWeights`.
      safety: the normalization safety factor (σ enters the rows as σ / safety).

    Returns:
      The scalar loss.
    """
    phi, _ = composed_map(coeffs, sigma / safety)
    mean = jnp.sum(weights * jnp.abs(phi - 1.0))
    band = interval_images(coeffs, bounds[0] / safety, bounds[1] / safety)[-1]
    worst = jnp.maximum(jnp.abs(band[0] - 1.0), jnp.abs(band[1] - 1.0))
    return (loss_weights.mean * mean + loss_weights.worst * jnp.minimum(worst, CAP)
            + loss_weights.penalty * stability_penalty(coeffs, safety))


def band_loss(coeffs, delta, bounds, loss_weights: LossWeights, safety=1.0):
    """Objective ``"band"``: −log φ′(0) plus a penalty for leaving [1 − δ, 1 + δ] on ``bounds``."""
    band = interval_images(coeffs, bounds[0] / safety, bounds[1] / safety)[-1]
    worst = jnp.minimum(jnp.maximum(jnp.abs(band[0] - 1.0), jnp.abs(band[1] - 1.0)), CAP)
    log_slope = jnp.sum(jnp.log(jnp.maximum(coeffs[:, 0], 1e-6))) - jnp.log(safety)
    violation = jax.nn.relu(worst - BAND_TARGET * delta) / delta
    return (-log_slope + loss_weights.band * violation**2
            + loss_weights.penalty * stability_penalty(coeffs, safety))


def direction_gains(out, u, v):
    """d_i = u_iᵀ O v_i for each column pair: φ(σ_i) plus round-off, in float32.

    Args:
      out: ``(B, m, n)`` orthogonalized matrices.
      u: ``(B, m, k)`` left singular vectors of the inputs.
      v: ``(B, n, k)`` right singular vectors.

    Returns:
      ``(B, k)`` gains.
    """
    out = out.astype(jnp.float32)
    return jnp.sum(u * (out @ v), axis=-2)


def matrix_loss(coeffs, mats, u, v, mask, loss_weights: LossWeights, *, precondition="frobenius",
                safety=1.0, dtype=None):
    """Objective ``"matrix"``: the engine's output on real matrices in the compute dtype.

    Args:
      coeffs: ``(T, 3)`` table (traced).
      mats: ``(B, m, n)`` float32 inputs X = U diag(s) Vᵀ.
      u, v: their singular vectors, ``(B, m, k)`` and ``(B, n, k)``.
      mask: ``(B, k)`` weights of the directions (0 for directions outside the target range).
      loss_weights: `LossWeights`.
      precondition, safety, dtype: the engine's settings (``newton_schulz_table``).

    Returns:
      The scalar loss.
    """
    out = newton_schulz_table(mats, coeffs, precondition=precondition, safety=safety,
                              dtype=dtype)
    errors = jnp.abs(direction_gains(out, u, v) - 1.0)
    errors = jnp.where(jnp.isfinite(errors), jnp.minimum(errors, CAP), CAP)
    mean = jnp.sum(mask * errors) / jnp.sum(mask)
    worst = smooth_max(jnp.where(mask > 0, errors, 0.0), loss_weights.tau)
    return (loss_weights.mean * mean + loss_weights.worst * worst
            + loss_weights.penalty * stability_penalty(coeffs, safety))


def orthogonality_loss(out):
    """‖O Oᵀ − I‖_F² / m per matrix of ``out`` (on the smaller side), averaged, in float32.

    With O = U φ(S) Vᵀ this is mean_i (φ(σ_i)² − 1)²: directions with σ ≈ 0 contribute a
    constant but (almost) no gradient, since ∂(φ²)/∂c ∝ φ ≈ 0 there.
    """
    o = out.astype(jnp.float32)
    if o.shape[-2] > o.shape[-1]:
        o = o.mT
    gram = o @ o.mT
    eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
    return jnp.mean(jnp.sum(jnp.square(gram - eye), axis=(-2, -1)) / gram.shape[-1])
