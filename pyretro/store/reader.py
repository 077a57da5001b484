"""Read-only access to a chunk store: validated open, zero-copy mmap views, and the neighbour gather."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.errors import MismatchError, StoreError
from pyretro.store import _gather
from pyretro.store._format import (
    ARRAY_FILES,
    HEADER_FILE,
    INDEX_DTYPE,
    TOKENIZER_FILE,
    checksum_file,
    read_header,
)


def _map(file: Path, dtype: np.dtype, n: int) -> np.ndarray:
    """A read-only zero-copy view of ``n`` elements of ``file`` (size already checked)."""
    if n == 0:
        a = np.empty(0, dtype)
        a.flags.writeable = False
        return a
    with open(file, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mm, dtype=dtype, count=n)


_LOAD_BLOCK = 64 << 20


def _load(file: Path, dtype: np.dtype, n: int) -> np.ndarray:
    """A read-only private copy of ``n`` elements of ``file`` in anonymous memory, huge pages requested.

    Why: a gather reads rows from random places; from anonymous memory it measured 1.8x faster than through the
    file mapping (bench/RESULTS.md, on a VM that granted no huge pages), and where the kernel grants 2 MiB pages
    the translations of a few GB also stay in the TLB."""
    size = n * dtype.itemsize
    if size == 0:
        return _map(file, dtype, 0)
    mm = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mm.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # kernels without transparent huge pages: plain pages, still in RAM
            pass
    with open(file, "rb", buffering=0) as f, memoryview(mm) as view:
        pos = 0
        while pos < size:
            got = f.readinto(view[pos:pos + _LOAD_BLOCK])
            if not got:
                raise StoreError(f"{file}: truncated while loading into memory ({pos} of {size} bytes)")
            pos += got
    a = np.frombuffer(mm, dtype=dtype, count=n)
    a.flags.writeable = False
    return a


def _reopen(path: str, store_id: str, in_memory: bool = False) -> ChunkStore:
    store = ChunkStore.open(path, in_memory=in_memory)
    if store.store_id != store_id:
        raise MismatchError(f"{path}: the store changed since it was pickled (store_id {store.store_id} != {store_id})")
    return store


class ChunkStore:
    """A finished chunk store, memory-mapped read-only. Open with ``ChunkStore.open(path)``."""

    def __init__(self, path: Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.header = header
        self.tokens: np.ndarray = arrays["tokens"]
        self.doc_offsets: np.ndarray = arrays["doc_offsets"]
        self.doc_chunks: np.ndarray = arrays["doc_chunks"]
        self.chunk_doc: np.ndarray = arrays["chunk_doc"]
        self._tokenizer = None
        self.in_memory = False  # set by open(in_memory=True): arrays read into RAM instead of mapped
        self._views = _gather.store_views(self.tokens, self.doc_offsets, self.doc_chunks, self.chunk_doc)

    # --- opening -----------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False, in_memory: bool = False) -> ChunkStore:
        """Opens and validates a store (header, file sizes, boundary values; all checksums with verify=True).

        ``in_memory=True`` reads the arrays into RAM (anonymous memory, transparent huge pages requested)
        instead of mapping the files: for a store that fits in memory, random-row gathers measured ~1.8x faster
        (with 4 KiB pages; 2 MiB pages, where granted, also cut TLB misses). Costs one read of the store at open and its size in RAM per process that opens it.

        Raises ``pyretro.errors.StoreError`` naming the file and the problem.
        """
        root = Path(path)
        header = read_header(root)
        token_dt = np.dtype("<" + {"uint16": "u2", "uint32": "u4"}[header["token_dtype"]])
        arrays: dict[str, np.ndarray] = {}
        for name, fname in ARRAY_FILES.items():
            file = root / fname
            dt = token_dt if name == "tokens" else INDEX_DTYPE
            n = header["arrays"][name]["shape"][0]
            if not file.is_file():
                raise StoreError(f"{file}: missing (array {name!r} of the store)")
            size = file.stat().st_size
            if size != n * dt.itemsize:
                what = "truncated" if size < n * dt.itemsize else "too long"
                raise StoreError(f"{file}: {what}: {size} bytes, expected {n * dt.itemsize} ({n} x {dt.name})")
            if verify:
                got = checksum_file(file)
                if got != header["arrays"][name]["checksum"]:
                    raise StoreError(f"{file}: checksum mismatch (corrupt): {got} != {header['arrays'][name]['checksum']}")
            arrays[name] = _load(file, dt, n) if in_memory else _map(file, dt, n)
        tok = header.get("tokenizer")
        if tok is not None:
            tfile = root / TOKENIZER_FILE
            if not tfile.is_file():
                raise StoreError(f"{tfile}: missing (the header records a tokenizer)")
            if verify and checksum_file(tfile) != tok["fingerprint"]:
                raise StoreError(f"{tfile}: does not match the fingerprint in {HEADER_FILE} (corrupt)")
        store = cls(root, header, arrays)
        store.in_memory = bool(in_memory)
        store._check_structure(full=verify)
        return store

    def _check_structure(self, full: bool) -> None:
        """Boundary values always (cheap); every offset with ``full``. The C++ gather also bounds-checks."""
        off, dch = self.doc_offsets, self.doc_chunks
        f_off, f_dch = self.path / ARRAY_FILES["doc_offsets"], self.path / ARRAY_FILES["doc_chunks"]
        if off[0] != 0 or off[-1] != self.num_tokens:
            raise StoreError(f"{f_off}: corrupt (must run from 0 to num_tokens={self.num_tokens})")
        if dch[0] != 0 or dch[-1] != len(self):
            raise StoreError(f"{f_dch}: corrupt (must run from 0 to num_chunks={len(self)})")
        if not full:
            return
        lens = np.diff(off)
        if (lens < 0).any():
            raise StoreError(f"{f_off}: corrupt (offsets decrease)")
        if not np.array_equal(np.diff(dch), -(-lens // self.chunk_len)):
            raise StoreError(f"{f_dch}: corrupt (chunk counts do not match document lengths)")
        expect = np.repeat(np.arange(self.num_docs, dtype=np.int64), np.diff(dch))
        if not np.array_equal(self.chunk_doc, expect):
            raise StoreError(f"{self.path / ARRAY_FILES['chunk_doc']}: corrupt (does not match doc_chunks)")

    # --- metadata ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.header["num_chunks"])

    @property
    def num_docs(self) -> int:
        return int(self.header["num_docs"])

    @property
    def num_tokens(self) -> int:
        return int(self.header["num_tokens"])

    @property
    def chunk_len(self) -> int:
        return int(self.header["chunk_len"])

    @property
    def vocab_size(self) -> int:
        return int(self.header["vocab_size"])

    @property
    def store_id(self) -> str:
        return str(self.header["store_id"])

    @property
    def tokenizer_fingerprint(self) -> str | None:
        tok = self.header.get("tokenizer")
        return tok["fingerprint"] if tok else None

    @property
    def tokenizer(self):
        """The store's ``tokenizers.Tokenizer`` (loaded on first use), or None."""
        if self._tokenizer is None and self.header.get("tokenizer"):
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.path / TOKENIZER_FILE))
        return self._tokenizer

    def __repr__(self) -> str:
        return (f"ChunkStore({str(self.path)!r}, chunks={len(self)}, docs={self.num_docs}, "
                f"tokens={self.num_tokens}, chunk_len={self.chunk_len})")

    # --- pickling (DataLoader workers): by path, re-mapped in the worker ------------------------------
    def __reduce__(self):
        return (_reopen, (str(self.path), self.store_id, self.in_memory))

    # --- access ------------------------------------------------------------------------------------
    def _chunk_index(self, i: Any, what: str = "chunk id") -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"{what} {i} is out of range [0, {len(self)})")
        return i

    def chunk_span(self, i: int) -> tuple[int, int]:
        """(start, end) token offsets of chunk ``i``."""
        i = self._chunk_index(i)
        d = int(self.chunk_doc[i])
        start = int(self.doc_offsets[d]) + (i - int(self.doc_chunks[d])) * self.chunk_len
        return start, min(start + self.chunk_len, int(self.doc_offsets[d + 1]))

    def chunk(self, i: int) -> np.ndarray:
        """Tokens of chunk ``i`` (a view, at most chunk_len long)."""
        start, end = self.chunk_span(i)
        return self.tokens[start:end]

    def document(self, d: int) -> np.ndarray:
        d = int(d)
        if not 0 <= d < self.num_docs:
            raise IndexError(f"document id {d} is out of range [0, {self.num_docs})")
        return self.tokens[int(self.doc_offsets[d]):int(self.doc_offsets[d + 1])]

    def doc_of_chunk(self, ids: Any) -> np.ndarray:
        """Document id of each chunk id (any shape; int64)."""
        a = np.asarray(ids)
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"ids: expected integer chunk ids, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        bad = (a < 0) | (a >= len(self))
        if bad.any():
            raise IndexError(f"chunk id {int(a[bad].flat[0])} is out of range [0, {len(self)})")
        return self.chunk_doc[a]

    def chunks_of_doc(self, d: int) -> range:
        d = int(d)
        if not 0 <= d < self.num_docs:
            raise IndexError(f"document id {d} is out of range [0, {self.num_docs})")
        return range(int(self.doc_chunks[d]), int(self.doc_chunks[d + 1]))

    def text(self, i: int) -> str:
        """Chunk ``i`` decoded with the store's tokenizer."""
        tok = self.tokenizer
        if tok is None:
            raise StoreError(f"{self.path}: the store has no tokenizer, cannot decode chunk {i} to text")
        return tok.decode(self.chunk(i).tolist(), skip_special_tokens=False)

    def gather(
        self,
        neighbor_ids: Any,
        with_continuation: bool = True,
        *,
        r: int | None = None,
        out: Any = None,
        out_mask: Any = None,
        pad_id: int = 0,
    ) -> tuple[Any, Any]:
        """Each id's chunk plus its continuation as a fixed-length row (see docs/store.md).

        Returns ``(tokens [..., r], mask [..., r])``: row = tokens from the chunk's start, at most ``r``,
        stopping at the end of the chunk's document (at the end of the chunk without continuation);
        the rest is ``pad_id`` with mask False. Id -1 = missing neighbour (all padding).
        """
        if r is None:
            r = 2 * self.chunk_len if with_continuation else self.chunk_len
        return _gather.gather(self._views, neighbor_ids, self.chunk_len, r, with_continuation, out, out_mask, pad_id)
