"""Smoke test of the fine-tuning benchmark (benchmarks/finetune.py) on tiny settings: the
tables' structure, finiteness, the identity start and the merge check; no tuning claims."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from benchmarks.finetune_lm import main, methods
from benchmarks.finetune_lm.data import load_sources, prose_text
from benchmarks.finetune_lm.lora import LoRALinear, merge_lora
from benchmarks.finetune_lm.report import COLUMNS

# Four methods keep the test near 30 s (each costs a compile); the adapters have their own tests.
ARGS = ["--quick", "--pretrain-steps", "6", "--pretrain-optimizer", "adamw", "--steps", "4",
        "--rates", "1", "--timing-repeats", "1", "--methods", "full,lora,oft,givens",
        "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune")
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        summary = main(ARGS + ["--out", str(out)])
    return summary, buffer.getvalue(), out


def _main_table(text: str) -> list[list[str]]:
    """Cells of the results table (the markdown lines after 'fine-tuning results')."""
    tail = text[text.index("fine-tuning results"):]
    lines = [ln for ln in tail.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]


@pytest.mark.extensive  # runs the benchmark (module fixture)
def test_table_has_every_method_with_finite_numbers(run):
    summary, text, _ = run
    header, rule, *body = _main_table(text)
    assert header == [c.strip() for c in COLUMNS]
    assert all(set(cell) == {"-"} for cell in rule)
    labels = [r.method.label for r in summary["results"]]
    assert [row[0] for row in body] == labels
    assert labels[0] == "full FT" and any(lbl.startswith("LoRA") for lbl in labels)
    for row in body:
        numbers = [float(c.replace(",", "")) for c in row[1:] if c != "n/a"]
        assert len(numbers) >= len(COLUMNS) - 2 and all(map(math.isfinite, numbers)), row
    full_params = int(body[0][1].replace(",", ""))
    assert all(0 < int(row[1].replace(",", "")) < full_params for row in body[1:])
    assert body[0][COLUMNS.index("x full")] == "1.00"  # full FT's step time over itself


@pytest.mark.extensive  # runs the benchmark (module fixture)
def test_identity_start_and_merge_check(run):
    summary, text, _ = run
    gap = float(re.search(r"identity at start: .* = (\S+)", text).group(1))
    assert gap < 1e-5
    for result in summary["results"]:
        for r in result.runs:
            assert all(math.isfinite(v) for v in r.history.val_loss + r.history.train_loss)
    for line in re.findall(r"max \|Δ logit\| (\S+)", text):
        assert float(line) < 1e-4


@pytest.mark.extensive  # runs the benchmark (module fixture)
def test_outputs_written(run):
    summary, _, out = run
    assert (out / "finetune.png").stat().st_size > 0
    payload = json.loads((out / "finetune.json").read_text())
    assert [row["key"] for row in payload["summary"]] == [
        r.method.name for r in summary["results"]]


def test_sources_and_vocabulary():
    with pytest.raises(ValueError, match=r"b_chars=50000 leaves a held-out split empty; "
                                         r"pass at least 81920"):
        load_sources(50_000, 50_000)
    sources = load_sources(50_000, 90_000)
    assert len(set(sources.vocab)) == sources.vocab_size
    for split in ("a_train", "a_val", "b_train", "b_val", "b_test"):
        ids = getattr(sources, split)
        assert ids.size > 0 and ids.min() >= 0 and ids.max() < sources.vocab_size
    text = prose_text(90_000)
    head = "".join(sources.vocab[i] for i in sources.b_train[:500])
    assert head == text[:500]


def test_lora_identity_merge_and_bad_rank():
    from flax import nnx

    layer = nnx.Linear(12, 5, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    lora = LoRALinear(layer, rank=3, rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(lora(x), layer(x))
    lora.lora_b[...] = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    w = np.asarray(layer.kernel[...], np.float64)
    a, b = (np.asarray(v[...], np.float64) for v in (lora.lora_a, lora.lora_b))
    np.testing.assert_allclose(lora(x), x @ (w + a @ b), rtol=1e-5, atol=1e-5)
    model = nnx.Sequential(lora)
    assert merge_lora(model) == ["layers/0"]
    np.testing.assert_allclose(model(x), x @ (w + a @ b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"LoRALinear: rank=6 exceeds"):
        LoRALinear(layer, rank=6, rngs=nnx.Rngs(0))


def test_budget_matching_counts_real_adapters():
    from benchmarks.lm import Config, make_model

    model = make_model(Config.quick(), 40)
    budget = methods.default_budget(model)
    chosen, _ = methods.methods(model, budget)
    lora = next(m for m in chosen if m.name == "lora")
    assert methods.count(lora.build(model)) == budget  # LoRA rank 2 on 32x32 and 32<->128
