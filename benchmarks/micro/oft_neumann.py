"""How far OFTv2's Cayley–Neumann rotations are from orthogonal, measured vs closed form.

    python -m benchmarks.micro.oft_neumann | tee benchmarks/results/oft_neumann.log

OFTv2 (Qiu et al., "Orthogonal Finetuning Made Scalable", arXiv 2506.19847) replaces the Cayley
inverse by k Neumann terms: ``R_k = (I + Q)(I + Q + … + Q^k)``. Because
``R_k = R (I − Q^{k+1})`` with ``R`` the exact Cayley rotation, for the eigenvalues ``iλ`` of
the skew ``Q`` (``q = ‖Q‖₂``)::

    ‖R_kᵀR_k − I‖₂ = max_λ | |1 − (iλ)^{k+1}|² − 1 |  ≤  2q^{k+1} + q^{2(k+1)}
    ‖R − R_k‖₂     = q^{k+1}                           ≤  √(1+q²) q^{k+1} / (1 − q)

(the right-hand bound of the second line is the generic Neumann tail bound, q < 1). For each
``q`` an ``OFTLinear`` with 4 random blocks of 32 (each block's ``Q`` scaled to ``‖Q‖₂ = q``)
reports ``orthogonality_error()`` in float32; the same ``R_k`` is also measured in float64
NumPy, next to the closed form and the bound.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from optorth.nn._oft import OFTLinear  # noqa: E402

BLOCK, BLOCKS = 32, 4
NORMS = (0.1, 0.3, 0.6, 0.9, 1.1)
TERMS = range(1, 9)


def skew(packed: np.ndarray, b: int) -> np.ndarray:
    q = np.zeros((b, b))
    q[np.triu_indices(b, k=1)] = packed
    return q - q.T


def packed_blocks(norm: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(BLOCKS):
        packed = rng.standard_normal(BLOCK * (BLOCK - 1) // 2)
        out.append(packed * norm / np.linalg.norm(skew(packed, BLOCK), 2))
    return np.stack(out)


def float64_deviation(packed: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """(‖R_kᵀR_k − I‖₂, closed form, ‖R − R_k‖₂, smallest singular value of R_k), maxima
    (the last a minimum) over the blocks, in float64."""
    dev = closed = gap = 0.0
    smallest = np.inf
    eye = np.eye(BLOCK)
    for row in packed:
        q = skew(row, BLOCK)
        r_k = (eye + q) @ sum(np.linalg.matrix_power(q, i) for i in range(k + 1))
        r = (eye + q) @ np.linalg.inv(eye - q)
        lam = np.linalg.eigvals(q).imag
        dev = max(dev, np.linalg.norm(r_k.T @ r_k - eye, 2))
        closed = max(closed, np.max(np.abs(np.abs(1 - (1j * lam) ** (k + 1)) ** 2 - 1)))
        gap = max(gap, np.linalg.norm(r - r_k, 2))
        smallest = min(smallest, np.linalg.svd(r_k, compute_uv=False).min())
    return dev, closed, gap, smallest


def layer(k: int, exact: bool, packed: np.ndarray) -> OFTLinear:
    base = nnx.Linear(BLOCK * BLOCKS, 8, rngs=nnx.Rngs(0))
    out = OFTLinear(base, block_size=BLOCK, neumann_terms=k, exact=exact)
    out.oft_skew[...] = jnp.asarray(packed, jnp.float32)
    return out


def main():
    print(f"OFTLinear, {BLOCKS} blocks of {BLOCK}, each Q scaled to spectral norm q; "
          "deviation = max over blocks of ‖RᵀR − I‖₂\n")
    rows, grid, sigma = [], {}, {}
    checks = {"closed": 0.0, "over64": -1.0, "over32": -1.0, "gap": 0.0}
    for norm in NORMS:
        packed = packed_blocks(norm, seed=int(norm * 100))
        exact_err = float(layer(1, True, packed).orthogonality_error())
        rows.append(f"| {norm} | exact Cayley | {exact_err:.2e} | 0 | 0 | 0 | 0 | — |")
        for k in TERMS:
            measured = float(layer(k, False, packed).orthogonality_error())
            dev64, closed, gap, sigma[norm, k] = float64_deviation(packed, k)
            bound = 2 * norm ** (k + 1) + norm ** (2 * (k + 1))
            tail = (f"{np.sqrt(1 + norm ** 2) * norm ** (k + 1) / (1 - norm):.2e}"
                    if norm < 1 else "—")
            grid[norm, k] = measured
            checks["closed"] = max(checks["closed"], abs(dev64 - closed))
            checks["over64"] = max(checks["over64"], dev64 - bound)
            checks["over32"] = max(checks["over32"], (measured - bound) / max(bound, 1.0))
            checks["gap"] = max(checks["gap"], abs(gap - norm ** (k + 1)) / norm ** (k + 1))
            rows.append(f"| {norm} | {k} | {measured:.2e} | {dev64:.2e} | {closed:.2e} | "
                        f"{bound:.2e} | {gap:.2e} (q^(k+1) = {norm ** (k + 1):.2e}) | {tail} |")
    print("Measured ‖RᵀR − I‖₂ (float32, OFTLinear.orthogonality_error), rows k, columns q:\n")
    print("| k | " + " | ".join(f"q = {n}" for n in NORMS) + " |")
    print("|---|" + "---|" * len(NORMS))
    for k in TERMS:
        print(f"| {k} | " + " | ".join(f"{grid[n, k]:.2e}" for n in NORMS) + " |")
    print("\nIn detail: float32 and float64 measurements, closed form "
          "max_λ ||1 − (iλ)^(k+1)|² − 1|, bound 2q^(k+1) + q^(2(k+1)); distance to the exact "
          "Cayley rotation and the generic Neumann tail bound √(1+q²) q^(k+1)/(1 − q):\n")
    print("| q | k | ‖RᵀR−I‖₂ float32 | float64 | closed form | bound | ‖R − R_k‖₂ float64 "
          "| tail bound |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    even_wins = all(grid[n, k] < grid[n, k + 1] for n in NORMS if n < 1 for k in (2, 4, 6))
    print(f"\nmax |float64 measurement − closed form| = {checks['closed']:.1e}; "
          f"max (float64 measurement − bound) = {checks['over64']:.1e}; "
          f"max (float32 measurement − bound) / max(bound, 1) = {checks['over32']:.1e} "
          f"(float32 round-off); "
          f"max |‖R − R_k‖₂ / q^(k+1) − 1| = {checks['gap']:.1e}")
    for n in (n for n in NORMS if n >= 1):
        print(f"q = {n} (outside the Neumann series' convergence), smallest singular value of "
              "R_k per k: " + ", ".join(f"{sigma[n, k]:.3f}" for k in TERMS))
    print(f"for every q < 1, k = 2, 4, 6 are closer to orthogonal than k = 3, 5, 7: {even_wins}")


if __name__ == "__main__":
    main()
