"""Tiny stores for the retrieval tests (imported by tests/test_retrieval*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from pyretro.store import ChunkStore, ChunkStoreWriter

VOCAB = 300


def word_tokenizer() -> Tokenizer:
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return tok


def make_store(path: Path, num_docs: int = 20, seed: int = 0, chunk_len: int = 8, max_len: int = 40,
               tokenizer: bool = True, repeat_docs: bool = True) -> ChunkStore:
    """Random documents; with ``repeat_docs`` every other document repeats a previous one, so chunks have
    exact duplicates in other documents (neighbours worth finding)."""
    rng = np.random.default_rng(seed)
    docs: list[np.ndarray] = []
    for d in range(num_docs):
        if repeat_docs and d % 2 == 1 and docs:
            docs.append(docs[int(rng.integers(len(docs)))].copy())
        else:
            docs.append(rng.integers(1, VOCAB, size=int(rng.integers(1, max_len))))
    kw = {"tokenizer": word_tokenizer()} if tokenizer else {"vocab_size": VOCAB}
    with ChunkStoreWriter(path, chunk_len=chunk_len, **kw) as w:
        for doc in docs:
            w.add_document(doc)
    return ChunkStore.open(path)
