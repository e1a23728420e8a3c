"""Tests of the main job (benchmarks/train_lm.py, package benchmarks/lm/): data, training loop,
command line."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from benchmarks import lm as train_lm
from benchmarks.lm import data as lm_data

QUICK = train_lm.Config.quick(steps=16, eval_every=8)


def _has_optorth(name: str) -> bool:
    return train_lm.REGISTRY[name].available()


@pytest.fixture(scope="module")
def corpus():
    return lm_data.load_corpus(QUICK.corpus_chars)


# ------------------------------------------------------------------------------- data


def test_corpus_is_deterministic_and_reads_the_stdlib(corpus):
    again = lm_data.load_corpus(QUICK.corpus_chars)
    np.testing.assert_array_equal(corpus.train, again.train)
    np.testing.assert_array_equal(corpus.val, again.val)
    assert corpus.vocab == again.vocab and corpus.files == again.files
    # The text really is the first selected file, read independently here.
    first = corpus.files[0]
    source = (lm_data.stdlib_root() / first).read_bytes().decode("utf-8", errors="replace")
    head = f"# {first}\n{source}"[:1000]
    assert corpus.decode(corpus.train[: len(head)]) == head
    assert not any(part in lm_data.EXCLUDED_DIRS for f in corpus.files for part in f.split("/"))


def test_split_is_a_partition_of_the_text(corpus):
    text, _ = lm_data.read_text(QUICK.corpus_chars)
    assert len(text) == QUICK.corpus_chars
    assert corpus.train.size + corpus.val.size == len(text)
    # Reassemble: chunk i of 4096 chars goes to val iff i % 10 == 9 (the documented rule).
    pieces, t, v = [], 0, 0
    for i in range(0, len(text), 4096):
        n = min(4096, len(text) - i)
        if (i // 4096) % 10 == 9:
            pieces.append(corpus.val[v : v + n])
            v += n
        else:
            pieces.append(corpus.train[t : t + n])
            t += n
    assert corpus.decode(np.concatenate(pieces)) == text


def test_batches_are_identical_for_identical_seeds(corpus):
    a = lm_data.Batches(corpus.train, 5, 4, 16, seed=3)
    b = lm_data.Batches(corpus.train, 5, 4, 16, seed=3)
    c = lm_data.Batches(corpus.train, 5, 4, 16, seed=4)
    for step in range(5):
        (xa, ya), (xb, yb) = a[step], b[step]
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert xa.shape == (4, 16) and ya.shape == (4, 16)
        np.testing.assert_array_equal(xa[:, 1:], ya[:, :-1])  # targets are shifted inputs
    assert not np.array_equal(a.offsets, c.offsets)


def test_bad_sizes_raise(corpus):
    with pytest.raises(ValueError, match="too short"):
        lm_data.Batches(corpus.train[:10], 2, 2, 16, seed=0)
    with pytest.raises(ValueError, match="num_chars"):
        lm_data.read_text(0)
    with pytest.raises(ValueError, match="heads=3 must divide d_model=32"):
        train_lm.make_model(QUICK.replace(heads=3), corpus.vocab_size)


# --------------------------------------------------------------------------- training


def _decreases(history: train_lm.History) -> bool:
    first, last = history.train_loss[0], np.mean(history.train_loss[-4:])
    return history.finite and last < first - 0.5 and history.val_loss[-1] < history.val_loss[0]


@pytest.mark.extensive  # trains
def test_adamw_trains_and_runs_are_reproducible(corpus):
    # The tiny quick model takes a larger step than the default model's 2e-3.
    h1 = train_lm.train("adamw", QUICK, corpus=corpus, progress=False, lr=1e-2)
    h2 = train_lm.train("adamw", QUICK, corpus=corpus, progress=False, lr=1e-2)
    assert _decreases(h1), h1.train_loss
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=1e-6)
    assert h1.eval_steps == [0, 4, 8, 12, 16]
    # Initial loss of a small-init model is about ln(vocab).
    assert abs(h1.train_loss[0] - np.log(corpus.vocab_size)) < 0.1


@pytest.mark.skipif(not _has_optorth("muon"), reason="optorth.muon not in this optorth yet")
@pytest.mark.extensive  # trains
def test_optorth_muon_trains_from_the_same_start_and_callback_sees_state(corpus):
    seen = {}

    def callback(info):
        if info.step == 3:
            seen["state"] = info.opt_state
            seen["params"] = info.params
            seen["matrices"] = info.state_matrices()

    history = train_lm.train("muon", QUICK, corpus=corpus, progress=False, callback=callback)
    adamw = train_lm.train("adamw", QUICK.replace(steps=1), corpus=corpus, progress=False)
    assert _decreases(history), history.train_loss
    # Same initial weights and first batch for every optimizer.
    assert history.train_loss[0] == adamw.train_loss[0]
    # The callback got optax's state as plain arrays, momentum of every hidden kernel included.
    assert all(isinstance(x, (jax.Array, np.ndarray)) for x in jax.tree.leaves(seen["state"]))
    for name in ("attn/query", "attn/out", "mlp/fc", "mlp/proj"):
        kernel = seen["params"]["blocks"][0][name.split("/")[0]][name.split("/")[1]]["kernel"]
        found = [m for path, m in seen["matrices"].items() if path.endswith(f"0/{name}/kernel")]
        assert found and all(m.shape == kernel.get_value().shape for m in found), name


@pytest.mark.extensive  # trains
def test_custom_transformation_and_errors(corpus):
    tx = optax.sgd(0.0)
    history = train_lm.train(tx, QUICK.replace(steps=3), corpus=corpus, progress=False)
    assert history.name == "custom"
    # lr 0 → parameters never move → identical validation loss throughout.
    assert len(set(history.val_loss)) == 1
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        train_lm.build_optimizer("nope", QUICK)
    with pytest.raises(ValueError, match="takes no Newton"):
        train_lm.build_optimizer("adamw@jordan", QUICK)


@pytest.mark.extensive  # trains
def test_nonfinite_loss_stops_the_run(corpus):
    history = train_lm.train("adamw", QUICK, corpus=corpus, progress=False, lr=1e12)
    assert not history.finite
    assert history.nonfinite_step is not None and len(history.train_loss) < QUICK.steps


# ----------------------------------------------------------------------- command line


@pytest.mark.extensive  # trains
def test_main_quick_writes_plot_table_and_results(tmp_path, capsys):
    names = ["adamw", "muon" if _has_optorth("muon") else "optax_muon"]
    argv = ["--quick", "--steps", "12", "--optimizers", ",".join(names),
            "--out", str(tmp_path), "--no-progress"]
    histories = train_lm.main(argv)
    printed = capsys.readouterr().out
    assert [h.name for h in histories] == names
    for name in names:
        assert f"| {name} " in printed
    assert "val@3" in printed and "val@12" in printed and "ms/step" in printed
    png = tmp_path / "train_lm.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    payload = json.loads((tmp_path / "train_lm.json").read_text())
    assert set(payload["optimizers"]) == set(names)
    assert payload["config"]["steps"] == 12
    rows = (tmp_path / "train_lm.csv").read_text().splitlines()
    assert rows[0] == "optimizer,split,step,loss"
    assert len(rows) == 1 + len(names) * (12 + len(train_lm.Config.quick(steps=12).eval_steps()))


@pytest.mark.extensive  # trains
@pytest.mark.skipif(not _has_optorth("muon"), reason="optorth.muon not in this optorth yet")
def test_ns_telemetry_flag_records_and_plots_every_hidden_matrix(tmp_path, corpus, capsys):
    from flax import nnx

    import optorth

    argv = ["--quick", "--steps", "4", "--optimizers", "adamw,muon", "--ns-telemetry", "4",
            "--ns-dtype", "bfloat16", "--out", str(tmp_path), "--no-progress"]
    train_lm.main(argv)
    assert "muon: Newton–Schulz in bfloat16" in capsys.readouterr().out
    records = json.loads((tmp_path / "train_lm_telemetry.json").read_text())
    assert list(records) == ["muon"]  # adamw runs no Newton–Schulz
    muon = records["muon"]
    assert muon["dtype"] == "bfloat16" and muon["steps"] == [1, 2, 3, 4]
    model = train_lm.make_model(train_lm.Config.quick(), corpus.vocab_size)
    targets = optorth.route(nnx.state(model, nnx.Param))
    flat = jax.tree_util.tree_flatten_with_path(
        targets, is_leaf=lambda t: isinstance(t, optorth.MatrixSpec) or t == "fallback")[0]
    matrices = {"/".join(str(getattr(k, "key", k)) for k in path)
                for path, target in flat if isinstance(target, optorth.MatrixSpec)}
    assert set(muon["errors"]) == matrices
    values = np.array(list(muon["errors"].values()))
    assert values.shape == (len(matrices), 4) and np.all(np.isfinite(values) & (values > 0))
    png = tmp_path / "train_lm_telemetry.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ns_telemetry_flag_refuses_a_negative_probe_count(tmp_path):
    with pytest.raises(ValueError, match="--ns-telemetry must be >= 0"):
        train_lm.main(["--quick", "--ns-telemetry", "-1", "--out", str(tmp_path)])


def test_help_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        train_lm.main(["--help"])
    printed = capsys.readouterr().out
    for name in ("adamw", "optax_muon", "muon", "turbo_muon", "normuon", "factored_muon"):
        assert name in printed


@pytest.mark.extensive  # trains every registry entry
def test_every_available_registry_entry_takes_finite_steps(corpus):
    cfg = QUICK.replace(steps=2, eval_every=2)
    names = [n for n in train_lm.available_optimizers() if n != "muon_learned"]
    for name in names:
        history = train_lm.train(name, cfg, corpus=corpus, progress=False)
        assert history.finite and len(history.train_loss) == 2, name
        assert history.val_loss[-1] < history.val_loss[0], name


@pytest.mark.skipif(not _has_optorth("muon"), reason="optorth.muon not in this optorth yet")
@pytest.mark.parametrize("bf16", [False, True])
def test_hidden_kernels_take_the_matrix_path(corpus, bf16):
    """The main job's routing (also with --bf16): hidden kernels on Muon, the rest on AdamW."""
    from flax import nnx

    import optorth

    model = train_lm.make_model(QUICK.replace(bf16=bf16), corpus.vocab_size)
    targets = optorth.route(nnx.state(model, nnx.Param))
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): target
        for path, target in jax.tree_util.tree_flatten_with_path(
            targets, is_leaf=lambda t: isinstance(t, optorth.MatrixSpec) or t == "fallback"
        )[0]
    }
    hidden = {p for p in flat if "/attn/" in p or "/mlp/" in p}
    assert len(hidden) == 6 * QUICK.layers
    for path, target in flat.items():
        expected = path in hidden
        assert isinstance(target, optorth.MatrixSpec) == expected, (path, target)
