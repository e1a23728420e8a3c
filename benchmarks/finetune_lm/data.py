"""Two text sources and one character vocabulary for the fine-tuning benchmark.

* Source A (pretraining): Python standard-library source, exactly the main job's text
  (`benchmarks.lm.data.read_text`, same file order and length).
* Source B (fine-tuning): English prose, the documentation strings CPython ships in
  ``pydoc_data/topics.py`` (the text ``help("assert")`` prints), topics concatenated in sorted
  order. Every CPython install has it; nothing is downloaded.

The vocabulary is the sorted set of characters of both texts. A is split like the main job
(every 10th chunk to validation). B is split the same way, and its held-out chunks are split
again, alternately, into a *val* split (learning-rate selection and curves) and a *test* split
(the reported target loss), so the chosen rate is never scored on the text that chose it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from benchmarks.lm import data as lm_data


@dataclasses.dataclass(frozen=True)
class Sources:
    """Encoded splits of both sources over one vocabulary (int32 token ids)."""

    vocab: tuple[str, ...]
    a_train: np.ndarray
    a_val: np.ndarray
    b_train: np.ndarray
    b_val: np.ndarray
    b_test: np.ndarray
    a_files: tuple[str, ...]
    b_only_chars: tuple[str, ...]
    b_only_count: int

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def pretraining_corpus(self) -> lm_data.Corpus:
        """Source A as the main job's `Corpus` (shared vocabulary)."""
        return lm_data.Corpus(train=self.a_train, val=self.a_val, vocab=self.vocab,
                              files=self.a_files, root=str(lm_data.stdlib_root()))

    def summary(self) -> dict:
        sizes = {k: int(getattr(self, k).size)
                 for k in ("a_train", "a_val", "b_train", "b_val", "b_test")}
        return {"vocab_size": self.vocab_size, **sizes,
                "b_only_chars": "".join(self.b_only_chars), "b_only_count": self.b_only_count}


def prose_text(num_chars: int) -> str:
    """The first ``num_chars`` characters of CPython's pydoc topic texts (sorted by topic)."""
    from pydoc_data.topics import topics

    text = "".join(f"{topics[name]}\n" for name in sorted(topics))
    if len(text) < num_chars:
        raise ValueError(f"pydoc_data.topics holds {len(text)} characters; ask for at most "
                         f"that many (got {num_chars})")
    return text[:num_chars]


def load_sources(a_chars: int, b_chars: int, *, chunk: int = 4096) -> Sources:
    """Both sources, encoded over their joint character vocabulary and split."""
    for name, value, chunks in (("a_chars", a_chars, 10), ("b_chars", b_chars, 20)):
        if value < chunks * chunk:
            raise ValueError(f"load_sources: {name}={value} leaves a held-out split empty; "
                             f"pass at least {chunks * chunk} ({chunks} chunks of {chunk})")
    text_a, files = lm_data.read_text(a_chars)
    text_b = prose_text(b_chars)
    vocab = tuple(sorted(set(text_a) | set(text_b)))
    lookup = {ch: i for i, ch in enumerate(vocab)}

    def encode(text):
        return np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text))

    a_train, a_val = lm_data.split_chunks(encode(text_a), chunk, 10)
    b_train, b_held = lm_data.split_chunks(encode(text_b), chunk, 10)
    b_test, b_val = lm_data.split_chunks(b_held, chunk, 2)
    b_only = tuple(sorted(set(text_b) - set(text_a)))
    return Sources(vocab=vocab, a_train=a_train, a_val=a_val, b_train=b_train, b_val=b_val,
                   b_test=b_test, a_files=files, b_only_chars=b_only,
                   b_only_count=sum(text_b.count(ch) for ch in b_only))
