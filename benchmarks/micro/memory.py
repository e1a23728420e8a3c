"""Optimizer-state bytes divided by parameter bytes on GPT-2 small's parameter shapes.

The parameters are float32 ``jax.ShapeDtypeStruct`` leaves and every state is obtained with
``jax.eval_shape(tx.init, params)``, so nothing is allocated. Shapes (GPT-2 small, tied
output head, 124,439,808 parameters)::

    wte 50257×768, wpe 1024×768, ln_f scale/bias 768
    12 × { ln_1, ln_2 scale/bias 768; attn c_attn 768×2304 + 2304; attn c_proj 768×768 + 768;
           mlp c_fc 768×3072 + 3072; mlp c_proj 3072×768 + 768 }

For optimizers built on ``optax.partition`` the state is also split by label (``matrix`` /
``fallback`` for optorth, ``muon`` / ``adam`` for optax), so a routing mistake (for example
every leaf silently sent to the fallback) shows up in the table. Targets:
adafactor ≤ 0.01, factored_muon ≤ 1.01 (float32 momentum) and ≤ 0.51 (bf16 momentum),
AdamW 2.0. Run::

    python -m benchmarks.micro.memory [--json out/memory.json]
"""

from __future__ import annotations

import argparse
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optorth

N_LAYERS, D_MODEL, VOCAB, CONTEXT = 12, 768, 50257, 1024


def gpt2_small_shapes(dtype=jnp.float32) -> dict:
    """The GPT-2-small parameter tree as ``jax.ShapeDtypeStruct`` leaves (Flax layout)."""

    def leaf(*shape):
        return jax.ShapeDtypeStruct(shape, dtype)

    def dense(fan_in, fan_out):
        return {"kernel": leaf(fan_in, fan_out), "bias": leaf(fan_out)}

    def norm():
        return {"scale": leaf(D_MODEL), "bias": leaf(D_MODEL)}

    d = D_MODEL
    block = {
        "ln_1": norm(),
        "attn": {"c_attn": dense(d, 3 * d), "c_proj": dense(d, d)},
        "ln_2": norm(),
        "mlp": {"c_fc": dense(d, 4 * d), "c_proj": dense(4 * d, d)},
    }
    return {
        "wte": {"embedding": leaf(VOCAB, d)},
        "wpe": {"embedding": leaf(CONTEXT, d)},
        "h": {str(i): jax.tree.map(lambda x: x, block) for i in range(N_LAYERS)},
        "ln_f": norm(),
    }


def tree_bytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def bytes_by_label(state) -> dict[str, int]:
    """State bytes per ``optax.partition`` label (empty if there is no partition)."""
    out: dict[str, int] = {}
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        label = next(
            (
                k.key
                for k in path
                if isinstance(k, jax.tree_util.DictKey)
                and isinstance(k.key, str)
                and k.key in ("matrix", "fallback", "muon", "adam")
            ),
            None,
        )
        if label is not None:
            out[label] = out.get(label, 0) + math.prod(x.shape) * np.dtype(x.dtype).itemsize
    return out


def optimizers() -> list[tuple[str, optax.GradientTransformation, float | None]]:
    """(name, transformation, target ratio or None)."""
    return [
        ("AdamW (optax.adamw)", optax.adamw(3e-4), 2.0),
        ("optax.contrib.muon", optax.contrib.muon(0.02), None),
        ("optorth.muon", optorth.muon(), None),
        ("optorth.muon bf16 state", optorth.muon(mu_dtype="bfloat16"), None),
        ("optorth.adafactor", optorth.adafactor(), 0.01),
        ("optorth.adafactor + momentum", optorth.adafactor(beta=0.9), None),
        ("optorth.normuon", optorth.normuon(), None),
        ("optorth.adamuon", optorth.adamuon(), None),
        ("optorth.factored_muon", optorth.factored_muon(), 1.01),
        ("optorth.factored_muon bf16 mom.", optorth.factored_muon(mu_dtype="bfloat16"), 0.51),
    ]


def measure(params) -> list[dict]:
    param_bytes = tree_bytes(params)
    rows = []
    for name, tx, target in optimizers():
        state = jax.eval_shape(tx.init, params)
        labels = bytes_by_label(state)
        ratio = tree_bytes(state) / param_bytes
        rows.append(
            dict(
                optimizer=name,
                state_bytes=tree_bytes(state),
                ratio=ratio,
                by_label={k: v / param_bytes for k, v in labels.items()},
                target=target,
                ok=None if target is None else bool(ratio <= target * (1 + 1e-4)),
            )
        )
    return rows


def print_table(rows, params) -> None:
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    print(f"GPT-2 small: {n:,} float32 parameters, {tree_bytes(params) / 2**20:.1f} MiB")
    print(f"| {'optimizer':<32} | state MiB | state/params | {'by path':<28} | target     |")
    print(f"|{'-' * 34}|-----------|--------------|{'-' * 30}|------------|")
    for r in rows:
        split = "  ".join(f"{k} {v:.3f}" for k, v in sorted(r["by_label"].items())) or "-"
        target = "-" if r["target"] is None else f"≤{r['target']:g} {'ok' if r['ok'] else 'MISS'}"
        if r["by_label"].get("matrix", 1.0) < 1e-3:
            target = "ROUTING BUG"  # no leaf took the matrix path: the number is meaningless
        print(
            f"| {r['optimizer']:<32} | {r['state_bytes'] / 2**20:9.1f} | {r['ratio']:12.4f} "
            f"| {split:<28} | {target:<10} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    params = gpt2_small_shapes()
    rows = measure(params)
    print_table(rows, params)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
