"""Streaming, crash-safe writer of a chunk store.

Documents are appended to files in a hidden temp directory next to the target (bounded memory: only
``buffer_tokens`` tokens are held before a flush; checksums are computed while streaming).
``finalize()`` writes ``header.json`` last, fsyncs, and renames the directory into place, so a crash at
any earlier point leaves nothing at ``path`` that opens.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.store._format import (
    ARRAY_FILES,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_FILE,
    INDEX_DTYPE,
    TOKENIZER_FILE,
    checksum_bytes,
    compute_store_id,
    dtype_name,
    token_dtype_for,
)


def _load_tokenizer(tokenizer: Any):
    """A ``tokenizers.Tokenizer`` from an object, a tokenizer.json path, or None."""
    if tokenizer is None:
        return None
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        p = Path(tokenizer)
        if p.is_dir():
            p = p / TOKENIZER_FILE
        try:
            return Tokenizer.from_file(str(p))
        except Exception as e:
            raise ValueError(f"tokenizer: cannot load {p}: {e}") from None
    raise TypeError(f"tokenizer: expected a tokenizers.Tokenizer or a path, got {type(tokenizer).__name__}")


class _Stream:
    """An append-only array file with a write buffer and a running sha256."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path = path
        self.dtype = dtype
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.hash = hashlib.sha256()
        self.pending: list[np.ndarray] = []
        self.pending_n = 0
        self.count = 0

    def append(self, a: np.ndarray) -> None:
        if a.size:
            self.pending.append(a)
            self.pending_n += a.size
            self.count += a.size

    def flush(self) -> None:
        if not self.pending:
            return
        buf = np.concatenate(self.pending).astype(self.dtype, copy=False)
        data = memoryview(np.ascontiguousarray(buf)).cast("B")
        self.f.write(data)
        self.hash.update(data)
        self.pending.clear()
        self.pending_n = 0

    def close(self, sync: bool) -> str:
        self.flush()
        self.f.flush()
        if sync:
            os.fsync(self.f.fileno())
        self.f.close()
        return "sha256:" + self.hash.hexdigest()

    def abort(self) -> None:
        self.pending.clear()
        if not self.f.closed:
            self.f.close()


class ChunkStoreWriter:
    """Writes documents (arrays of token ids) into a new chunk store at ``path``.

    Use as a context manager: a normal exit finalizes, an exception discards everything written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        chunk_len: int = 64,
        vocab_size: int | None = None,
        tokenizer: Any = None,
        *,
        overwrite: bool = False,
        buffer_tokens: int = 1 << 22,
        metadata: dict[str, Any] | None = None,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        if isinstance(chunk_len, bool) or not isinstance(chunk_len, (int, np.integer)) or chunk_len <= 0:
            raise ValueError(f"chunk_len: must be a positive int, got {chunk_len!r}")
        self.chunk_len = int(chunk_len)
        self._tokenizer = _load_tokenizer(tokenizer)
        if vocab_size is None:
            if self._tokenizer is None:
                raise ValueError("vocab_size: required when no tokenizer is given")
            vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.token_dtype = token_dtype_for(vocab_size)
        self.vocab_size = int(vocab_size)
        if self._tokenizer is not None:
            tv = self._tokenizer.get_vocab_size(with_added_tokens=True)
            if tv > self.vocab_size:
                raise ValueError(f"vocab_size: {self.vocab_size} is smaller than the tokenizer's vocabulary ({tv})")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: already exists (pass overwrite=True to replace it)")
        self.overwrite = overwrite
        self.metadata = dict(metadata or {})
        self._fsync = fsync
        self._buffer_tokens = max(1, int(buffer_tokens))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        self._streams = {
            "tokens": _Stream(self._tmp / ARRAY_FILES["tokens"], self.token_dtype),
            "doc_offsets": _Stream(self._tmp / ARRAY_FILES["doc_offsets"], INDEX_DTYPE),
            "doc_chunks": _Stream(self._tmp / ARRAY_FILES["doc_chunks"], INDEX_DTYPE),
            "chunk_doc": _Stream(self._tmp / ARRAY_FILES["chunk_doc"], INDEX_DTYPE),
        }
        self._streams["doc_offsets"].append(np.zeros(1, INDEX_DTYPE))
        self._streams["doc_chunks"].append(np.zeros(1, INDEX_DTYPE))
        # Single documents are collected in lists and turned into index arrays in bulk (cheap per document).
        self._docs: list[np.ndarray] = []
        self._doc_lens: list[int] = []
        self._docs_tokens = 0
        self.num_tokens = 0
        self.num_docs = 0
        self.num_chunks = 0
        self._committed = (0, 0, 0)  # tokens, docs, chunks already handed to the streams
        self._state = "open"  # open -> finalized | aborted

    # --- appending ---------------------------------------------------------------------------------
    def _check_tokens(self, tokens: Any, what: str) -> np.ndarray:
        a = np.asarray(tokens)
        if a.ndim != 1:
            raise ValueError(f"{what}: expected a 1-D array of token ids, got shape {a.shape}")
        if a.size == 0:
            return a.astype(self.token_dtype)
        if a.dtype.kind not in "iu":
            raise TypeError(f"{what}: token ids must be integers, got dtype {a.dtype}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{what}: token id {bad} is outside [0, vocab_size={self.vocab_size})")
        out = a.astype(self.token_dtype, copy=False)
        # Buffered until the next flush: never keep a view of the caller's (possibly reused) buffer.
        return out.copy() if out is a or np.may_share_memory(out, a) else out

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"ChunkStoreWriter({self.path}): already {self._state}")

    def add_document(self, tokens: Any) -> None:
        """Appends one document (a 1-D integer array or sequence of token ids; may be empty)."""
        self._require_open()
        a = self._check_tokens(tokens, "tokens")
        self._docs.append(a)
        self._doc_lens.append(a.size)
        self._docs_tokens += a.size
        self.num_tokens += a.size
        self.num_docs += 1
        self.num_chunks += -(-a.size // self.chunk_len)
        if len(self._doc_lens) >= 1 << 16 or self._docs_tokens >= self._buffer_tokens:
            self._flush_docs()

    def _flush_docs(self) -> None:
        if self._doc_lens:
            toks = np.concatenate(self._docs) if self._docs_tokens else np.empty(0, self.token_dtype)
            lens = np.array(self._doc_lens, INDEX_DTYPE)
            self._docs.clear()
            self._doc_lens.clear()
            self._docs_tokens = 0
            self._append(toks, lens)

    def add_documents(self, documents: Iterable[Any]) -> None:
        for doc in documents:
            self.add_document(doc)

    def add_batch(self, tokens: Any, lengths: Any) -> None:
        """Appends ``len(lengths)`` documents given as their concatenated tokens and their lengths."""
        self._require_open()
        lens = np.asarray(lengths)
        if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
            raise ValueError(f"lengths: expected a 1-D integer array, got shape {lens.shape} dtype {lens.dtype}")
        lens = lens.astype(INDEX_DTYPE)
        if lens.size and lens.min() < 0:
            raise ValueError("lengths: negative document length")
        a = self._check_tokens(tokens, "tokens")
        if int(lens.sum()) != a.size:
            raise ValueError(f"lengths: sum {int(lens.sum())} != number of tokens {a.size}")
        self._flush_docs()  # keep document order
        self.num_tokens += a.size
        self.num_docs += lens.size
        self.num_chunks += int((-(-lens // self.chunk_len)).sum())
        self._append(a, lens)

    def _append(self, tokens: np.ndarray, lens: np.ndarray) -> None:
        s = self._streams
        n_tok, n_doc, n_chunk = self._committed
        nchunks = -(-lens // self.chunk_len)
        doc_ids = np.arange(n_doc, n_doc + lens.size, dtype=INDEX_DTYPE)
        s["tokens"].append(tokens)
        s["doc_offsets"].append(n_tok + np.cumsum(lens))
        s["doc_chunks"].append(n_chunk + np.cumsum(nchunks))
        s["chunk_doc"].append(np.repeat(doc_ids, nchunks))
        self._committed = (n_tok + int(tokens.size), n_doc + int(lens.size), n_chunk + int(nchunks.sum()))
        for st in s.values():  # bound both the buffered elements and the number of small pieces
            if st.pending_n >= self._buffer_tokens or len(st.pending) >= 4096:
                st.flush()

    # --- finishing ---------------------------------------------------------------------------------
    def finalize(self) -> Path:
        """Completes the store and moves it to ``path`` atomically; returns ``path``."""
        self._require_open()
        try:
            self._flush_docs()
            assert self._committed == (self.num_tokens, self.num_docs, self.num_chunks)
            arrays = {}
            for name, st in self._streams.items():
                checksum = st.close(self._fsync)
                arrays[name] = {
                    "file": ARRAY_FILES[name],
                    "dtype": dtype_name(st.dtype),
                    "shape": [st.count],
                    "checksum": checksum,
                }
            tok_entry = None
            if self._tokenizer is not None:
                data = self._tokenizer.to_str().encode("utf-8")
                self._write_file(self._tmp / TOKENIZER_FILE, data)
                tok_entry = {"file": TOKENIZER_FILE, "fingerprint": checksum_bytes(data)}
            from pyretro._version import __version__

            header: dict[str, Any] = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "chunk_len": self.chunk_len,
                "token_dtype": dtype_name(self.token_dtype),
                "vocab_size": self.vocab_size,
                "tokenizer": tok_entry,
                "num_tokens": self.num_tokens,
                "num_docs": self.num_docs,
                "num_chunks": self.num_chunks,
                "arrays": arrays,
            }
            header["store_id"] = compute_store_id(header)
            header["created_by"] = f"pyretro {__version__}"
            header["metadata"] = self.metadata
            self._write_file(self._tmp / HEADER_FILE, json.dumps(header, indent=2).encode("utf-8"))
            self._fsync_dir(self._tmp)
            self._move_into_place()
        except BaseException:
            self.abort()
            raise
        self._state = "finalized"
        return self.path

    def _write_file(self, p: Path, data: bytes) -> None:
        with open(p, "wb") as f:
            f.write(data)
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())

    def _fsync_dir(self, p: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _move_into_place(self) -> None:
        old = None
        if self.path.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.path}: appeared while writing (pass overwrite=True to replace it)")
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.path, old)
        os.rename(self._tmp, self.path)
        self._fsync_dir(self.path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Discards everything written; ``path`` is left untouched."""
        if self._state != "open":
            return
        self._docs.clear()
        self._doc_lens.clear()
        for st in self._streams.values():
            st.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._state = "aborted"

    def __enter__(self) -> ChunkStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self._state == "open":
                self.finalize()
        else:
            self.abort()

    def __del__(self) -> None:  # an unfinished writer that is garbage-collected leaves no temp dir
        try:
            if getattr(self, "_state", None) == "open":
                self.abort()
        except Exception:
            pass
