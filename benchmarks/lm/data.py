"""The main job's corpus: Python standard-library source, read from the running interpreter.

Every machine that runs Python has this text, so the benchmark never downloads anything.
The corpus is deterministic for a given interpreter installation:

1. list every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``, skipping installed
   third-party packages (``site-packages``, ``dist-packages``) and the test suites (whose data
   files contain deliberately odd encodings), sorted by relative path;
2. order them by a seeded permutation (so the corpus mixes many modules rather than the
   alphabetical first few) and concatenate ``"# <relative path>\\n" + source`` until a fixed
   number of characters is reached;
3. cut the text into fixed-size chunks and send every ``val_every``-th chunk to validation
   (an in-distribution split that never depends on file boundaries);
4. build the character vocabulary as the sorted set of characters of the whole corpus.

Batches are windows of ``seq_len + 1`` characters at offsets drawn once, from a seeded
generator, for every step of the run: every optimizer sees exactly the same data in the same
order. Validation windows are fixed, evenly spaced offsets.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sysconfig

import numpy as np

#: Directory names whose files never enter the corpus.
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Encoded train/validation text and its vocabulary.

    Attributes:
      train: int32 token ids of the training text.
      val: int32 token ids of the validation text.
      vocab: the characters, ``vocab[i]`` is the character of id ``i``.
      files: relative paths of the files that contributed text, in corpus order.
      root: the standard-library directory the files were read from.
    """

    train: np.ndarray
    val: np.ndarray
    vocab: tuple[str, ...]
    files: tuple[str, ...]
    root: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids) -> str:
        """Characters of a sequence of token ids."""
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1))

    def summary(self) -> dict:
        """A JSON-friendly description (sizes, vocabulary, first files)."""
        return {
            "root": self.root,
            "files": len(self.files),
            "train_chars": int(self.train.size),
            "val_chars": int(self.val.size),
            "vocab_size": self.vocab_size,
            "first_files": list(self.files[:5]),
        }


def stdlib_root() -> pathlib.Path:
    """The running interpreter's standard-library directory."""
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: pathlib.Path | None = None) -> list[pathlib.Path]:
    """Sorted ``*.py`` files under ``root`` outside `EXCLUDED_DIRS`."""
    root = stdlib_root() if root is None else pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(f"standard-library directory {root} does not exist")
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS.isdisjoint(rel.parts[:-1]) and path.is_file():
            files.append(rel)
    return sorted(files, key=lambda p: p.as_posix())


def read_text(num_chars: int, *, seed: int = 0, root=None) -> tuple[str, tuple[str, ...]]:
    """Concatenate standard-library sources in a seeded order up to ``num_chars`` characters.

    Args:
      num_chars: exact number of characters to return.
      seed: seed of the file permutation (independent of the training seed).
      root: standard-library directory (default: the running interpreter's).

    Returns:
      ``(text, files)``: the text and the relative paths that contributed to it.
    """
    if num_chars < 1:
        raise ValueError(f"num_chars must be positive, got {num_chars}")
    root = stdlib_root() if root is None else pathlib.Path(root)
    files = stdlib_files(root)
    order = np.random.default_rng(seed).permutation(len(files))
    pieces, used, total = [], [], 0
    for index in order:
        rel = files[index]
        source = (root / rel).read_bytes().decode("utf-8", errors="replace")
        piece = f"# {rel.as_posix()}\n{source}\n"
        pieces.append(piece)
        used.append(rel.as_posix())
        total += len(piece)
        if total >= num_chars:
            break
    if total < num_chars:
        raise ValueError(
            f"the standard library under {root} holds only {total} characters of eligible "
            f"source; ask for at most that many (got num_chars={num_chars})"
        )
    return "".join(pieces)[:num_chars], tuple(used)


def split_chunks(tokens: np.ndarray, chunk: int, val_every: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``val_every``-th chunk of ``chunk`` tokens to validation, the rest to training."""
    if chunk < 1 or val_every < 2:
        raise ValueError(f"need chunk >= 1 and val_every >= 2, got {chunk}, {val_every}")
    chunk_ids = np.arange(tokens.size) // chunk
    is_val = chunk_ids % val_every == val_every - 1
    return tokens[~is_val], tokens[is_val]


def load_corpus(
    num_chars: int = 2_000_000,
    *,
    val_every: int = 10,
    chunk: int = 4096,
    seed: int = 0,
    root=None,
) -> Corpus:
    """The standard-library corpus, encoded and split (see the module docstring).

    Args:
      num_chars: total characters (train + validation).
      val_every: one chunk in ``val_every`` goes to validation (10 → a 90/10 split).
      chunk: chunk size of the split, in characters.
      seed: seed of the file order.
      root: standard-library directory (default: the running interpreter's).

    Returns:
      A `Corpus`.
    """
    text, files = read_text(num_chars, seed=seed, root=root)
    vocab = tuple(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    tokens = np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text))
    train, val = split_chunks(tokens, chunk, val_every)
    root = stdlib_root() if root is None else pathlib.Path(root)
    return Corpus(train=train, val=val, vocab=vocab, files=files, root=str(root))


def batch_offsets(data_len: int, steps: int, batch_size: int, seq_len: int, seed: int):
    """Start offsets ``(steps, batch_size)`` of every training window of a run, drawn once."""
    high = data_len - seq_len - 1
    if high < 1:
        raise ValueError(
            f"training text of {data_len} characters is too short for seq_len={seq_len}; "
            "raise num_chars or lower seq_len"
        )
    rng = np.random.default_rng(seed)
    return rng.integers(0, high + 1, size=(steps, batch_size), dtype=np.int64)


def windows(data: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-character targets, each ``offsets.shape + (seq_len,)``."""
    index = np.asarray(offsets)[..., None] + np.arange(seq_len + 1)
    block = data[index]
    return block[..., :-1], block[..., 1:]


class Batches:
    """The training batches of one run: ``batches[step] -> (inputs, targets)``.

    The offsets are fixed at construction from ``seed``, so two ``Batches`` with the same
    arguments yield identical data in identical order.
    """

    def __init__(self, data: np.ndarray, steps: int, batch_size: int, seq_len: int, seed: int):
        self.data = data
        self.seq_len = seq_len
        self.offsets = batch_offsets(data.size, steps, batch_size, seq_len, seed)

    def __len__(self) -> int:
        return self.offsets.shape[0]

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return windows(self.data, self.offsets[step], self.seq_len)


def eval_windows(
    data: np.ndarray, num_batches: int, batch_size: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed validation windows ``(num_batches, batch_size, seq_len)``, evenly spaced."""
    count = num_batches * batch_size
    high = data.size - seq_len - 1
    if high < 0:
        raise ValueError(
            f"validation text of {data.size} characters is too short for seq_len={seq_len}"
        )
    offsets = np.linspace(0, high, count).astype(np.int64).reshape(num_batches, batch_size)
    return windows(data, offsets, seq_len)
