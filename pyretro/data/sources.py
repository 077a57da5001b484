"""Input files for ingestion: find them, cut them into shards, and stream their documents.

A shard is a list of byte ranges ("pieces") of input files. Cut points are aligned to record boundaries by
the planner (a line start for JSONL and line mode, the position after a blank line for paragraph mode), so a
worker reads exactly ``[start, end)`` of each piece, and a shard's documents never depend on other shards.
Only the planner seeks around cut points; nothing reads a whole file into memory (except ``text_mode="file"``,
where a file is one document).

Compressed text/JSONL inputs (``.gz``, ``.bz2``, ``.xz``; the format comes from the suffix before it, e.g.
``docs.jsonl.gz``) are streamed through the standard library's decompressors. They cannot be cut at byte
offsets, so each compressed file is one piece (shards are balanced by compressed size), and the "bytes
consumed" a record reports are compressed bytes, so progress still sums to the planned total.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

__all__ = ["FORMATS", "TEXT_MODES", "Piece", "detect_format", "expand_inputs", "iter_documents", "plan_shards"]

FORMATS = ("auto", "text", "jsonl", "megatron")
TEXT_MODES = ("file", "paragraph", "line")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_MEGATRON_SUFFIXES = (".bin", ".idx")
# Decompressing readers over an open binary file (stdlib only). zstd: not in this Python's stdlib.
_COMPRESSED = {".gz": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}
_UNSUPPORTED = (".zst", ".zstd", ".lz4", ".zip", ".7z")
_DECOMPRESS_ERRORS = (OSError, EOFError, lzma.LZMAError)  # gzip.BadGzipFile is an OSError


def compression(path: str | os.PathLike) -> str | None:
    """The compression suffix of ``path`` (``.gz``, ``.bz2``, ``.xz``) or None; unsupported ones raise."""
    suf = Path(path).suffix.lower()
    if suf in _UNSUPPORTED:
        raise ValueError(f"{path}: {suf} compressed input is not supported (supported: "
                         f"{', '.join(_COMPRESSED)}); decompress it first")
    return suf if suf in _COMPRESSED else None


def _content_suffix(path: Path) -> str:
    """The suffix that names the format: ``.jsonl`` for ``docs.jsonl.gz``."""
    return (Path(path.stem) if compression(path) else path).suffix.lower()


@dataclass(frozen=True)
class Piece:
    """Bytes ``[start, end)`` of ``path``; ``size``/``mtime_ns`` identify the file version (for resume)."""

    path: str
    start: int
    end: int
    size: int
    mtime_ns: int

    def to_json(self) -> dict:
        return asdict(self)


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Files named by ``inputs``: files as given, directories recursively (sorted, hidden entries skipped),
    glob patterns sorted. Order is kept (it is the document order of the store)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise ValueError("inputs: no input files given")
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not files:
                raise ValueError(f"inputs: directory {p} contains no files")
            out.extend(files)
        elif p.is_file():
            out.append(p)
        elif glob.has_magic(str(item)):
            files = sorted(Path(f) for f in glob.glob(str(item), recursive=True) if Path(f).is_file())
            if not files:
                raise FileNotFoundError(f"inputs: pattern {item!s} matches no files")
            out.extend(files)
        else:
            raise FileNotFoundError(f"inputs: no such file or directory: {p}")
    return out


def detect_format(files: Sequence[Path], input_format: str = "auto") -> str:
    """``text``, ``jsonl`` or ``megatron``; ``auto`` decides by suffix (all files must agree)."""
    if input_format not in FORMATS:
        raise ValueError(f"input_format: expected one of {FORMATS}, got {input_format!r}")
    if input_format == "megatron":
        for f in files:
            if compression(f):
                raise ValueError(f"{f}: Megatron .bin/.idx inputs cannot be compressed")
    if input_format != "auto":
        return input_format
    kinds = set()
    for f in files:
        suf = _content_suffix(f)
        kinds.add("jsonl" if suf in _JSONL_SUFFIXES else "megatron" if suf in _MEGATRON_SUFFIXES else "text")
    if len(kinds) > 1:
        raise ValueError(f"inputs: mixed formats {sorted(kinds)}; ingest one format at a time or pass input_format")
    return kinds.pop()


def _record_mode(fmt: str, text_mode: str) -> str:
    """How records are delimited: ``file``, ``paragraph`` or ``line`` (JSONL is line-delimited)."""
    return "line" if fmt == "jsonl" else text_mode


def _aligned_cut(f, pos: int, mode: str, size: int) -> int:
    """The first record start at or after byte ``pos``."""
    f.seek(pos - 1)
    f.readline()  # rest of the line holding byte pos-1: now at the first line start >= pos
    if mode == "line":
        return f.tell()
    while True:  # paragraph: after the next blank line (or EOF)
        line = f.readline()
        if not line:
            return size
        if not line.strip():
            return f.tell()


def plan_shards(files: Sequence[Path], fmt: str, text_mode: str, shard_bytes: int) -> list[list[Piece]]:
    """Cuts the inputs into shards of about ``shard_bytes`` (whole files are packed together; large files are
    split at record boundaries, except in ``file`` mode where a file is one record)."""
    if text_mode not in TEXT_MODES:
        raise ValueError(f"text_mode: expected one of {TEXT_MODES}, got {text_mode!r}")
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes: must be >= 1, got {shard_bytes}")
    mode = _record_mode(fmt, text_mode)
    pieces: list[Piece] = []
    for path in files:
        st = path.stat()
        size = st.st_size
        cuts = [0]
        if mode != "file" and size > shard_bytes and not compression(path):
            with open(path, "rb") as f:
                for nominal in range(shard_bytes, size, shard_bytes):
                    if nominal > cuts[-1]:
                        c = _aligned_cut(f, nominal, mode, size)
                        if c < size and c > cuts[-1]:
                            cuts.append(c)
        cuts.append(size)
        for a, b in pairwise(cuts):
            pieces.append(Piece(str(path), a, b, size, st.st_mtime_ns))
    shards: list[list[Piece]] = []
    cur: list[Piece] = []
    cur_bytes = 0
    for pc in pieces:
        n = pc.end - pc.start
        if cur and cur_bytes + n > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(pc)
        cur_bytes += n
    if cur:
        shards.append(cur)
    return shards


class _Reader:
    """The (decompressed) bytes of an input file; ``consumed()`` = bytes of the file itself read so far."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.raw = open(path, "rb")  # noqa: SIM115 (closed in close())
        comp = compression(path)
        self.f = _COMPRESSED[comp](self.raw) if comp else self.raw

    def consumed(self) -> int:
        return self.raw.tell()

    def _guard(self, fn, *a):
        try:
            return fn(*a)
        except _DECOMPRESS_ERRORS as e:
            raise ValueError(f"{self.path}: corrupt or truncated {compression(self.path)} file ({e})") from None

    def readline(self) -> bytes:
        return self._guard(self.f.readline)

    def read(self, n: int = -1) -> bytes:
        return self._guard(self.f.read, n)

    def close(self) -> None:
        if self.f is not self.raw:
            self.f.close()
        self.raw.close()

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _line_number(path: str, pos: int) -> int:
    """1-based line number of (decompressed) byte ``pos`` (computed only when reporting an error)."""
    n = 1
    with _Reader(path) as f:
        left = pos
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


def _decode(raw: bytes, path: str, pos: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}:{_line_number(path, pos)}: not valid UTF-8 (byte {pos + e.start} of the file)"
        ) from None


def _iter_lines(piece: Piece) -> Iterator[tuple[int, bytes, int]]:
    """(byte position, line, file bytes consumed by it) for each line of the piece. Positions are in the
    decompressed text; a compressed file is always one whole piece."""
    if compression(piece.path):
        with _Reader(piece.path) as f:
            pos, done = 0, 0
            while True:
                line = f.readline()
                if not line:
                    break
                now = f.consumed()  # advances in read-ahead blocks, so most lines report 0
                yield pos, line, now - done
                pos, done = pos + len(line), now
        return
    with open(piece.path, "rb") as f:
        f.seek(piece.start)
        pos = piece.start
        while pos < piece.end:
            line = f.readline()
            if not line:
                break
            yield pos, line, len(line)
            pos += len(line)


def _check_unchanged(piece: Piece) -> None:
    st = os.stat(piece.path)
    if st.st_size != piece.size or st.st_mtime_ns != piece.mtime_ns:
        raise RuntimeError(f"{piece.path}: changed while being ingested (size or mtime differs from the plan)")


def iter_documents(piece: Piece, fmt: str, text_mode: str = "file", field: str = "text") -> Iterator[tuple[str, int]]:
    """(document text, input bytes it consumed) for each record of the piece."""
    _check_unchanged(piece)
    mode = _record_mode(fmt, text_mode)
    if mode == "file":
        with _Reader(piece.path) as f:
            raw = f.read()
        yield _decode(raw, piece.path, 0), piece.size
    elif fmt == "jsonl":
        pending = 0  # bytes of skipped blank lines, reported with the next record
        for pos, line, used in _iter_lines(piece):
            pending += used
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{piece.path}:{_line_number(piece.path, pos)}: invalid JSON: {e}") from None
            if not isinstance(rec, dict):
                raise ValueError(
                    f"{piece.path}:{_line_number(piece.path, pos)}: expected a JSON object, got {type(rec).__name__}"
                )
            if field not in rec:
                keys = ", ".join(list(rec)[:10])
                raise ValueError(
                    f"{piece.path}:{_line_number(piece.path, pos)}: no field {field!r} (fields: {keys}); "
                    "set the field name with field= / --field"
                )
            text = rec[field]
            if not isinstance(text, str):
                raise ValueError(
                    f"{piece.path}:{_line_number(piece.path, pos)}: field {field!r} is {type(text).__name__}, "
                    "expected a string"
                )
            yield text, pending
            pending = 0
    elif mode == "line":
        pending = 0
        for pos, line, used in _iter_lines(piece):
            pending += used
            text = _decode(line, piece.path, pos).rstrip("\r\n")
            if text.strip():
                yield text, pending
                pending = 0
    else:  # paragraph: maximal runs of non-blank lines
        block: list[str] = []
        nbytes = 0
        for pos, line, used in _iter_lines(piece):
            nbytes += used
            if line.strip():
                block.append(_decode(line, piece.path, pos))
            elif block:
                yield "".join(block).rstrip("\r\n"), nbytes
                block, nbytes = [], 0
        if block:
            yield "".join(block).rstrip("\r\n"), nbytes
