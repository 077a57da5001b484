"""The on-disk chunk store format (see docs/store.md): names, dtypes, the header and its validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.errors import StoreError

FORMAT_NAME = "pyretro-chunk-store"
FORMAT_VERSION = 1
HEADER_FILE = "header.json"
TOKENIZER_FILE = "tokenizer.json"

# Array name -> file name. Metadata arrays are always little-endian int64.
ARRAY_FILES = {
    "tokens": "tokens.bin",
    "doc_offsets": "doc_offsets.bin",
    "doc_chunks": "doc_chunks.bin",
    "chunk_doc": "chunk_doc.bin",
}
INDEX_DTYPE = np.dtype("<i8")
MAX_VOCAB = 1 << 32


def token_dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32 (little-endian)."""
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size: expected an int, got {type(vocab_size).__name__}")
    if not 0 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size: must be in [1, 2**32], got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def dtype_name(dt: np.dtype) -> str:
    return np.dtype(dt).name  # "uint16", "uint32", "int64"


def checksum_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def checksum_file(path: Path, block: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def compute_store_id(header: dict[str, Any]) -> str:
    """A content id: equal for stores with identical arrays, chunk_len, dtype, vocab and tokenizer."""
    tok = header.get("tokenizer") or {}
    key = {
        "format": FORMAT_NAME,
        "version": header["version"],
        "chunk_len": header["chunk_len"],
        "token_dtype": header["token_dtype"],
        "vocab_size": header["vocab_size"],
        "tokenizer": tok.get("fingerprint"),
        "arrays": {k: header["arrays"][k]["checksum"] for k in sorted(ARRAY_FILES)},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _need(header: dict, key: str, kind: type | tuple, file: Path) -> Any:
    if key not in header:
        raise StoreError(f"{file}: header field {key!r} is missing")
    v = header[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise StoreError(f"{file}: header field {key!r} has the wrong type ({type(v).__name__})")
    return v


def read_header(root: Path) -> dict[str, Any]:
    """Loads header.json and checks its fields and internal consistency (not the array files)."""
    file = root / HEADER_FILE
    if not root.exists():
        raise StoreError(f"{root}: no chunk store here (the directory does not exist)")
    if not root.is_dir():
        raise StoreError(f"{root}: a chunk store is a directory, this is a file")
    if not file.is_file():
        raise StoreError(f"{file}: missing (not a finished chunk store; a writer may have crashed before finalize)")
    try:
        header = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{file}: corrupt header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise StoreError(f"{file}: corrupt header (expected a JSON object)")
    fmt = header.get("format")
    if fmt != FORMAT_NAME:
        raise StoreError(f"{file}: not a pyretro chunk store (format {fmt!r}, expected {FORMAT_NAME!r})")
    version = _need(header, "version", int, file)
    if version != FORMAT_VERSION:
        raise StoreError(f"{file}: unsupported store version {version} (this pyretro reads version {FORMAT_VERSION})")
    chunk_len = _need(header, "chunk_len", int, file)
    if chunk_len <= 0:
        raise StoreError(f"{file}: chunk_len must be positive, got {chunk_len}")
    vocab = _need(header, "vocab_size", int, file)
    tdt = _need(header, "token_dtype", str, file)
    try:
        expect = dtype_name(token_dtype_for(vocab))
    except (TypeError, ValueError) as e:
        raise StoreError(f"{file}: {e}") from None
    if tdt != expect:
        raise StoreError(f"{file}: token_dtype {tdt!r} does not match vocab_size {vocab} (expected {expect!r})")
    counts = {k: _need(header, k, int, file) for k in ("num_tokens", "num_docs", "num_chunks")}
    for k, v in counts.items():
        if v < 0:
            raise StoreError(f"{file}: {k} is negative ({v})")
    arrays = _need(header, "arrays", dict, file)
    shapes = {
        "tokens": [counts["num_tokens"]],
        "doc_offsets": [counts["num_docs"] + 1],
        "doc_chunks": [counts["num_docs"] + 1],
        "chunk_doc": [counts["num_chunks"]],
    }
    for name, fname in ARRAY_FILES.items():
        a = arrays.get(name)
        if not isinstance(a, dict):
            raise StoreError(f"{file}: array {name!r} is missing from the header")
        want_dt = tdt if name == "tokens" else "int64"
        if a.get("file") != fname or a.get("dtype") != want_dt or a.get("shape") != shapes[name]:
            raise StoreError(
                f"{file}: array {name!r} entry is inconsistent (file {a.get('file')!r}, dtype {a.get('dtype')!r}, "
                f"shape {a.get('shape')!r}; expected {fname!r}, {want_dt!r}, {shapes[name]})"
            )
        if not isinstance(a.get("checksum"), str):
            raise StoreError(f"{file}: array {name!r} has no checksum")
    tok = header.get("tokenizer")
    if tok is not None and not (isinstance(tok, dict) and isinstance(tok.get("fingerprint"), str)
                                and tok.get("file") == TOKENIZER_FILE):
        raise StoreError(f"{file}: corrupt tokenizer entry")
    sid = _need(header, "store_id", str, file)
    if sid != compute_store_id(header):
        raise StoreError(f"{file}: store_id does not match the recorded checksums (header edited or corrupt)")
    return header
