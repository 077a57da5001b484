"""Import from Megatron-LM's indexed dataset (``.bin`` + ``.idx`` pairs).

``.idx`` layout (little-endian): 9-byte magic ``MMIDIDX\\x00\\x00``; uint64 version (1); uint8 dtype code;
uint64 sequence count S; uint64 document-index count D; int32[S] sequence lengths (tokens);
int64[S] byte offsets into ``.bin``; int64[D] document boundaries as sequence indices (0 ... S);
optionally int8[S] modes (multimodal files, ignored). ``.bin`` holds the tokens, no header.
A Megatron document (a range of sequences) becomes one pyretro document.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.errors import StoreError
from pyretro.store.importers import BATCH_TOKENS, _progress, doc_batches
from pyretro.store.writer import ChunkStoreWriter

MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
          8: np.uint16}
_HEAD = struct.Struct("<9sQBQQ")


class MegatronDataset:
    """A validated, memory-mapped Megatron indexed dataset."""

    def __init__(self, prefix: str | os.PathLike) -> None:
        p = str(prefix)
        for ext in (".bin", ".idx"):
            if p.endswith(ext):
                p = p[: -len(ext)]
        self.idx_path, self.bin_path = Path(p + ".idx"), Path(p + ".bin")
        for f in (self.idx_path, self.bin_path):
            if not f.is_file():
                raise StoreError(f"{f}: missing (Megatron datasets are .bin/.idx pairs)")
        idx = self.idx_path
        size = idx.stat().st_size
        with open(idx, "rb") as f:
            head = f.read(_HEAD.size)
        if len(head) < 9 or head[:9] != MAGIC:
            raise StoreError(f"{idx}: not a Megatron indexed dataset (bad magic {head[:9]!r})")
        if len(head) < _HEAD.size:
            raise StoreError(f"{idx}: truncated header ({size} bytes)")
        _, version, code, n_seq, n_doc = _HEAD.unpack(head)
        if version != 1:
            raise StoreError(f"{idx}: unsupported version {version} (expected 1)")
        if code not in DTYPES:
            raise StoreError(f"{idx}: unknown dtype code {code}")
        self.dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        if self.dtype.kind == "f":
            raise StoreError(f"{idx}: dtype {self.dtype.name} holds no token ids")
        base = _HEAD.size + 12 * n_seq + 8 * n_doc
        if size not in (base, base + n_seq):  # + n_seq: optional int8 modes of multimodal files
            what = "truncated" if size < base else "has unexpected trailing bytes"
            raise StoreError(f"{idx}: {what} ({size} bytes; {n_seq} sequences and {n_doc} document entries "
                             f"need {base})")
        mm = np.memmap(idx, dtype=np.uint8, mode="r") if size else None
        o = _HEAD.size
        self.sizes = np.frombuffer(mm, "<i4", n_seq, o).astype(np.int64)
        self.pointers = np.frombuffer(mm, "<i8", n_seq, o + 4 * n_seq)
        self.doc_idx = np.frombuffer(mm, "<i8", n_doc, o + 12 * n_seq).astype(np.int64)
        di = self.doc_idx
        if n_doc < 1 or di[0] != 0 or di[-1] != n_seq or (np.diff(di) < 0).any():
            raise StoreError(f"{idx}: corrupt document index (must increase from 0 to {n_seq} sequences)")
        if (self.sizes < 0).any() or (self.pointers < 0).any():
            raise StoreError(f"{idx}: corrupt (negative sequence size or offset)")
        bin_size = self.bin_path.stat().st_size
        item = self.dtype.itemsize
        if n_seq and int((self.pointers + self.sizes * item).max()) > bin_size:
            raise StoreError(f"{self.bin_path}: truncated ({bin_size} bytes, the index points past the end)")
        if (self.pointers % item).any():
            raise StoreError(f"{idx}: corrupt (offsets not aligned to {self.dtype.name})")
        self.bin = (np.memmap(self.bin_path, dtype=self.dtype, mode="r") if bin_size
                    else np.empty(0, self.dtype))
        seq_end = np.cumsum(self.sizes)
        seq_start = seq_end - self.sizes
        # Sequences stored back to back in order (what Megatron writes): documents are slices of .bin.
        self.contiguous = bool(np.array_equal(self.pointers, seq_start * item))
        cum = np.concatenate([[0], seq_end])
        self.doc_offsets = cum[di]  # token offsets of documents in the concatenation of sequences
        self.num_docs = n_doc - 1
        self.num_tokens = int(cum[-1])

    def tokens_of(self, d0: int, d1: int) -> np.ndarray:
        """Concatenated tokens of documents [d0, d1)."""
        s0, s1 = int(self.doc_idx[d0]), int(self.doc_idx[d1])
        item = self.dtype.itemsize
        if self.contiguous:
            a = int(self.pointers[s0]) // item if s0 < len(self.pointers) else self.bin.size
            return self.bin[a:a + int(self.doc_offsets[d1] - self.doc_offsets[d0])]
        parts = [self.bin[int(p) // item:int(p) // item + int(n)] for p, n in
                 zip(self.pointers[s0:s1], self.sizes[s0:s1], strict=True)]
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def max_token(self) -> int:
        m = -1
        for a in range(0, self.bin.size, BATCH_TOKENS):
            m = max(m, int(self.bin[a:a + BATCH_TOKENS].max()))
        return m


def import_megatron(
    prefix_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    chunk_len: int = 64,
    vocab_size: int | None = None,
    tokenizer: Any = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """A store from one or more Megatron datasets (prefix, or ``.bin``/``.idx`` path; documents in order).

    ``vocab_size`` defaults to the tokenizer's vocabulary, else to the largest token id + 1.
    """
    if isinstance(prefix_or_paths, (str, os.PathLike)):
        prefix_or_paths = [prefix_or_paths]
    prefixes = []
    for p in prefix_or_paths:  # "x.bin" and "x.idx" name the same dataset
        s = str(p).removesuffix(".bin").removesuffix(".idx")
        if s not in prefixes:
            prefixes.append(s)
    datasets = [MegatronDataset(p) for p in prefixes]
    if vocab_size is None and tokenizer is None:
        vocab_size = max([ds.max_token() for ds in datasets] + [0]) + 1
    total = sum(ds.num_tokens for ds in datasets)
    with ChunkStoreWriter(out_path, chunk_len, vocab_size, tokenizer, overwrite=overwrite) as w, \
            _progress(total, "import megatron", progress) as bar:
        for ds in datasets:
            for d0, d1 in doc_batches(ds.doc_offsets):
                toks = ds.tokens_of(d0, d1)
                try:
                    w.add_batch(toks, np.diff(ds.doc_offsets[d0:d1 + 1]))
                except ValueError as e:
                    raise ValueError(f"{ds.bin_path}: documents {d0}..{d1 - 1}: {e}") from None
                bar.update(toks.size)
    return Path(out_path)
