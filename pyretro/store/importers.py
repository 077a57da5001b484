"""Building stores from a plain numpy token array, and merging stores (e.g. shards built in parallel)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.errors import MismatchError
from pyretro.store._format import ARRAY_FILES
from pyretro.store.reader import ChunkStore
from pyretro.store.writer import ChunkStoreWriter

BATCH_TOKENS = 1 << 24  # documents are copied in batches of about this many tokens (bounded memory)


def doc_batches(doc_offsets: np.ndarray, batch_tokens: int | None = None) -> Iterator[tuple[int, int]]:
    """[d0, d1) document ranges of about ``batch_tokens`` tokens each (a longer document is one batch)."""
    batch_tokens = batch_tokens or BATCH_TOKENS
    num_docs = len(doc_offsets) - 1
    d0 = 0
    while d0 < num_docs:
        target = int(doc_offsets[d0]) + batch_tokens
        d1 = int(np.searchsorted(doc_offsets, target, side="right")) - 1
        d1 = min(max(d1, d0 + 1), num_docs)
        yield d0, d1
        d0 = d1


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not show)


def import_numpy(
    tokens: Any,
    doc_offsets: Any,
    out_path: str | os.PathLike,
    chunk_len: int = 64,
    vocab_size: int | None = None,
    tokenizer: Any = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """A store from a 1-D token array and document offsets (``num_docs + 1`` entries, from 0 to len(tokens)).

    Both may be np.memmap (read in batches). ``vocab_size`` defaults to the tokenizer's, else max id + 1.
    """
    tokens = np.asarray(tokens)
    off = np.asarray(doc_offsets)
    if tokens.ndim != 1:
        raise ValueError(f"tokens: expected a 1-D array, got shape {tokens.shape}")
    if off.ndim != 1 or off.size < 1 or off.dtype.kind not in "iu":
        raise ValueError(f"doc_offsets: expected a 1-D integer array of num_docs + 1 >= 1 entries, got {off.shape}")
    off = off.astype(np.int64)
    if off[0] != 0 or off[-1] != tokens.size or (np.diff(off) < 0).any():
        raise ValueError(f"doc_offsets: must increase from 0 to len(tokens)={tokens.size}")
    if vocab_size is None and tokenizer is None:
        vocab_size = int(tokens.max()) + 1 if tokens.size else 1
    with ChunkStoreWriter(out_path, chunk_len, vocab_size, tokenizer, overwrite=overwrite) as w, \
            _progress(tokens.size, "import", progress) as bar:
        for d0, d1 in doc_batches(off):
            a, b = int(off[d0]), int(off[d1])
            w.add_batch(tokens[a:b], np.diff(off[d0:d1 + 1]))
            bar.update(b - a)
    return Path(out_path)


def merge_stores(
    paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = False,
    batch_tokens: int | None = None,
) -> Path:
    """Concatenates stores (documents in the order given) into a new store at ``out_path``.

    All must share chunk_len, token dtype, vocab_size and tokenizer fingerprint (else MismatchError, checked
    for every input before anything is written). The result is identical (same store_id) to writing all their
    documents with one writer.

    Streams with bounded memory: one input is open at a time, and its tokens are read from the file in
    batches of about ``batch_tokens`` (default ``BATCH_TOKENS``) rather than through its memory map, whose
    touched pages would count toward RSS until the store is closed.
    """
    if not paths:
        raise ValueError("paths: at least one store is needed")
    first: dict[str, Any] | None = None
    for p in paths:  # validate every input first (one open at a time), so a mismatch writes nothing
        s = ChunkStore.open(p)
        meta = {"path": s.path, "chunk_len": s.chunk_len, "vocab_size": s.vocab_size,
                "tokenizer_fingerprint": s.tokenizer_fingerprint, "dtype": s.tokens.dtype,
                "num_tokens": s.num_tokens}
        del s
        if first is None:
            first, total = meta, 0
        for what in ("chunk_len", "vocab_size", "tokenizer_fingerprint"):
            if meta[what] != first[what]:
                raise MismatchError(
                    f"merge_stores: {meta['path']} has {what}={meta[what]!r} but {first['path']} has "
                    f"{first[what]!r}"
                )
        if meta["dtype"] != first["dtype"]:
            raise MismatchError(f"merge_stores: {meta['path']} has token dtype {meta['dtype']}, "
                                f"{first['path']} {first['dtype']}")
        total += meta["num_tokens"]
    assert first is not None
    tokenizer = first["path"] if first["tokenizer_fingerprint"] else None
    with ChunkStoreWriter(out_path, first["chunk_len"], first["vocab_size"], tokenizer, overwrite=overwrite) as w, \
            _progress(total, "merge", progress) as bar:
        for p in paths:
            s = ChunkStore.open(p)
            off = np.array(s.doc_offsets)  # 8 bytes per document; the tokens stay on disk
            dtype, tokens_file = s.tokens.dtype, s.path / ARRAY_FILES["tokens"]
            del s  # unmaps the input before its tokens are read
            with open(tokens_file, "rb") as f:
                for d0, d1 in doc_batches(off, batch_tokens):
                    a, b = int(off[d0]), int(off[d1])
                    f.seek(a * dtype.itemsize)
                    batch = np.fromfile(f, dtype=dtype, count=b - a)
                    if batch.size != b - a:
                        raise MismatchError(f"merge_stores: {tokens_file} changed while merging (short read)")
                    w.add_batch(batch, np.diff(off[d0:d1 + 1]))
                    bar.update(b - a)
    return Path(out_path)
