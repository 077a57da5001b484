"""Ingestion: text / JSONL / Megatron files -> tokens -> a chunk store. Streaming, multi-process, resumable.

Plan: the inputs are cut into shards (``pyretro.data.sources``). Each shard is tokenized by a worker process
and written as its own chunk store ``shard-NNNNN`` in a work directory (atomic), followed by a sidecar
``shard-NNNNN.json`` recording exactly what it was built from (pieces of input files with their size and
mtime, tokenizer fingerprint, options). A rerun skips every shard whose sidecar matches and whose store opens;
a killed run therefore redoes only unfinished shards. Finally the shards are merged, in input order, into the
output store and the work directory is removed.

Memory per process is bounded by ``batch_bytes`` of text (and its encodings) plus the store writer's buffer,
independent of corpus size.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.data import sources
from pyretro.data.tokenizer import fingerprint, load_tokenizer, save_tokenizer, special_ids, train_bpe

__all__ = ["DEFAULT_VOCAB_SIZE", "IngestReport", "ingest"]

DEFAULT_VOCAB_SIZE = 8192
SHARD_SPEC_VERSION = 1
# Tokens a store writer buffers before writing (bounds its memory; 1M tokens = 2-4 MB).
WRITER_BUFFER_TOKENS = 1 << 20
# Testing hook: "N" makes the worker building shard N raise after its first batch; "N:kill" makes it exit
# abruptly there (a killed run).
FAIL_ENV = "PYRETRO_INGEST_FAIL_SHARD"


@dataclass
class IngestReport:
    path: Path
    num_docs: int
    num_tokens: int
    num_chunks: int
    shards: int
    shards_skipped: int
    input_bytes: int
    seconds: float
    tokenizer_fingerprint: str | None


# --- worker side -------------------------------------------------------------------------------------
_W: dict[str, Any] = {}


def _init_worker(progress_q: Any, tok_json: str, single_threaded: bool) -> None:
    if single_threaded:  # processes are the parallelism; Rust threads per process would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _W["tok"] = Tokenizer.from_str(tok_json)
    _W["report"] = progress_q.put if progress_q is not None else None


def _encode(tok: Any, texts: list[str], eod: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated token ids (uint32, EOD after each document if ``eod``) and per-document lengths."""
    enc = getattr(tok, "encode_batch_fast", tok.encode_batch)(texts, add_special_tokens=False)
    ids = [e.ids for e in enc]
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.uint32, count=int(lens.sum()))
    if eod is not None:
        flat = np.insert(flat, np.cumsum(lens), np.uint32(eod))
        lens += 1
    return flat, lens


def _batches(pieces: list[sources.Piece], cfg: dict, batch_bytes: int) -> Iterator[tuple[list[str], int]]:
    texts: list[str] = []
    nbytes = 0
    for pc in pieces:
        for text, n in sources.iter_documents(pc, cfg["format"], cfg["text_mode"], cfg["field"]):
            texts.append(text)
            nbytes += n
            if nbytes >= batch_bytes:
                yield texts, nbytes
                texts, nbytes = [], 0
    if texts or nbytes:
        yield texts, nbytes


def _build_shard(task: dict) -> dict:
    """Tokenizes one shard into its own store, then writes its sidecar. Runs in a worker (or in-process)."""
    from pyretro.store import ChunkStoreWriter

    tok, report = _W["tok"], _W.get("report")
    cfg = task["spec"]["config"]
    pieces = [sources.Piece(**p) for p in task["spec"]["pieces"]]
    fail = os.environ.get(FAIL_ENV, "").split(":")
    fail_here, hard = fail[0] == str(task["index"]), fail[1:] == ["kill"]
    docs = tokens = 0
    with ChunkStoreWriter(task["path"], cfg["chunk_len"], cfg["vocab_size"], tok, overwrite=True,
                          buffer_tokens=WRITER_BUFFER_TOKENS) as w:
        for texts, nbytes in _batches(pieces, cfg, task["batch_bytes"]):
            if texts:
                flat, lens = _encode(tok, texts, cfg["eod_id"])
                w.add_batch(flat, lens)
                docs += lens.size
                tokens += flat.size
            if report is not None:
                report(nbytes)
            if fail_here and hard:
                os._exit(17)  # like SIGKILL: no cleanup, no exception
            if fail_here:
                raise RuntimeError(f"{FAIL_ENV}: injected failure in shard {task['index']}")
    _write_json(task["sidecar"], {**task["spec"], "num_docs": docs, "num_tokens": tokens})
    return {"index": task["index"], "num_docs": docs, "num_tokens": tokens}


# --- driver side -------------------------------------------------------------------------------------
def _write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _shard_done(path: Path, sidecar: Path, spec: dict) -> dict | None:
    """The sidecar if the shard was finished with exactly this spec and its store opens, else None."""
    from pyretro.store import ChunkStore

    try:
        rec = json.loads(sidecar.read_text(encoding="utf-8"))
        if {k: rec.get(k) for k in spec} != json.loads(json.dumps(spec)):
            return None
        s = ChunkStore.open(path)
        if s.num_docs != rec["num_docs"] or s.num_tokens != rec["num_tokens"]:
            return None
        return rec
    except Exception:  # missing, stale, partial or corrupt: rebuild
        return None


def _sample_texts(shards: list[list[sources.Piece]], cfg: dict, limit: int) -> Iterator[str]:
    seen = 0
    for shard in shards:
        for pc in shard:
            for text, n in sources.iter_documents(pc, cfg["format"], cfg["text_mode"], cfg["field"]):
                yield text
                seen += n
                if seen >= limit:
                    return


def _tokenizer_for(tokenizer: Any, vocab_size: int | None, shards, cfg, train_bytes: int, work: Path, progress):
    if tokenizer is not None:
        return load_tokenizer(tokenizer)
    vs = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
    params = {"vocab_size": vs, "train_bytes": train_bytes, "format": cfg["format"], "text_mode": cfg["text_mode"],
              "field": cfg["field"], "inputs": [[p.to_json() for p in s] for s in shards]}
    tok_file, params_file = work / "tokenizer.json", work / "tokenizer.params.json"
    try:  # resume: reuse the tokenizer trained by the interrupted run on the same inputs
        if json.loads(params_file.read_text(encoding="utf-8")) == json.loads(json.dumps(params)):
            return load_tokenizer(tok_file)
    except (OSError, ValueError):
        pass
    tok = train_bpe(_sample_texts(shards, cfg, train_bytes), vs, show_progress=progress)
    save_tokenizer(tok, tok_file)
    _write_json(params_file, params)
    return tok


def _run_shards(tasks: list[dict], tok_json: str, num_workers: int, bar: Any) -> list[dict]:
    if num_workers <= 1:
        _init_worker(None, tok_json, single_threaded=False)
        _W["report"] = bar.update
        try:
            return [_build_shard(t) for t in tasks]
        finally:
            _W.clear()
    ctx = mp.get_context("spawn")  # never fork a process whose Rust thread pool may be running
    progress_q = ctx.Queue()
    # ProcessPoolExecutor (not Pool): a worker that dies abruptly raises BrokenProcessPool instead of hanging.
    ex = ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(progress_q, tok_json, True))
    try:
        pending = {ex.submit(_build_shard, t) for t in tasks}
        results = []
        while pending:
            finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(progress_q, bar)
            for fut in finished:
                try:
                    results.append(fut.result())  # re-raises a worker's exception here
                except BrokenProcessPool:
                    raise RuntimeError(
                        "ingest: a worker process died (killed, out of memory, or it could not re-import the "
                        "__main__ module: spawned workers need the main script to be a file); finished shards "
                        "are kept, rerun to resume, or pass num_workers=1"
                    ) from None
        _drain(progress_q, bar)
        return results
    finally:
        # On an error, queued shards are cancelled; running ones finish (and are reused by the next run).
        ex.shutdown(wait=True, cancel_futures=True)


def _drain(progress_q: Any, bar: Any) -> None:
    try:
        while True:
            bar.update(progress_q.get_nowait())
    except queue.Empty:
        pass


def _progress_bar(total: int, initial: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc="ingest", disable=not show)


def _check_int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    return int(v)


def ingest(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    tokenizer: Any = None,
    vocab_size: int | None = None,
    input_format: str = "auto",
    text_mode: str = "file",
    field: str = "text",
    chunk_len: int = 64,
    append_eod: bool = True,
    num_workers: int | None = None,
    shard_bytes: int = 64 << 20,
    batch_bytes: int = 256 << 10,
    train_bytes: int = 128 << 20,
    work_dir: str | os.PathLike | None = None,
    keep_shards: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_shards: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Builds the chunk store ``out_path`` from ``inputs`` (files, directories or glob patterns).

    Formats (``input_format="auto"`` decides by suffix): ``jsonl`` (``.jsonl/.json/.ndjson``; one object per
    line, text in ``field``), ``megatron`` (``.bin/.idx``; already tokens, delegates to ``import_megatron``),
    ``text`` (anything else, UTF-8; ``text_mode`` = ``file``: one document per file, ``paragraph``: one per
    blank-line-separated block, ``line``: one per non-blank line).

    ``tokenizer``: a ``tokenizers.Tokenizer`` or a ``tokenizer.json`` path; if None a byte-level BPE of
    ``vocab_size`` (default 8192) is trained on the first ``train_bytes`` of input. The tokenizer is saved in
    the store. ``append_eod`` appends the tokenizer's end-of-document id to every document.
    ``num_workers`` tokenizer processes (default: CPU count; 1 = in this process, with the Rust thread pool).
    Resumable: rerunning after a crash reuses finished shards kept in ``work_dir``
    (default: ``.<out name>.ingest`` next to ``out_path``). ``on_shards(total, skipped)`` is called once the
    plan is known.
    """
    t0 = time.perf_counter()
    out = Path(out_path)
    files = sources.expand_inputs(inputs)
    fmt = sources.detect_format(files, input_format)
    chunk_len = _check_int("chunk_len", chunk_len, 1)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out_path: {out} already exists (pass overwrite=True / --overwrite)")
    if fmt == "megatron":
        return _ingest_megatron(files, out, tokenizer, vocab_size, chunk_len, overwrite, progress, t0)
    shard_bytes = _check_int("shard_bytes", shard_bytes, 1)
    batch_bytes = _check_int("batch_bytes", batch_bytes, 1)
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    num_workers = _check_int("num_workers", num_workers, 1)
    if not isinstance(field, str) or not field:
        raise ValueError(f"field: expected a non-empty string, got {field!r}")

    shards = sources.plan_shards(files, fmt, text_mode, shard_bytes)
    work = Path(work_dir) if work_dir is not None else out.parent / f".{out.name}.ingest"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob(".shard-*.tmp-*"):  # partial shards of a killed run (writers never finalized)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    cfg: dict[str, Any] = {"format": fmt, "text_mode": text_mode, "field": field, "chunk_len": chunk_len}
    tok = _tokenizer_for(tokenizer, vocab_size, shards, cfg, _check_int("train_bytes", train_bytes, 1), work,
                         progress)
    from pyretro.data.tokenizer import vocab_size as tok_vocab_size

    vs = tok_vocab_size(tok) if vocab_size is None or tokenizer is None else int(vocab_size)
    eod = None
    if append_eod:
        eod = special_ids(tok)["eod"]
        if eod is None:
            raise ValueError("tokenizer: has no end-of-document token (<|eod|>, <|endoftext|>, </s>, ...); "
                             "add one or pass append_eod=False / --no-eod")
    cfg.update(vocab_size=vs, eod_id=eod, tokenizer=fingerprint(tok))

    tasks, done, skipped_bytes = [], {}, 0
    for i, shard in enumerate(shards):
        spec = {"version": SHARD_SPEC_VERSION, "config": cfg, "pieces": [p.to_json() for p in shard]}
        path, sidecar = work / f"shard-{i:05d}", work / f"shard-{i:05d}.json"
        rec = _shard_done(path, sidecar, spec)
        if rec is not None:
            done[i] = rec
            skipped_bytes += sum(p.end - p.start for p in shard)
            continue
        sidecar.unlink(missing_ok=True)
        tasks.append({"index": i, "spec": spec, "path": str(path), "sidecar": str(sidecar),
                      "batch_bytes": batch_bytes})
    if on_shards is not None:
        on_shards(len(shards), len(done))
    total_bytes = sum(p.end - p.start for s in shards for p in s)
    with _progress_bar(total_bytes, skipped_bytes, progress) as bar:
        for r in _run_shards(tasks, tok.to_str(), min(num_workers, max(1, len(tasks))), bar):
            done[r["index"]] = r
        bar.update(total_bytes - bar.n)  # workers' last progress messages may still be in flight
    if sum(r["num_docs"] for r in done.values()) == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"inputs: no documents found in {len(files)} file(s)")

    from pyretro.store import ChunkStore

    _merge([work / f"shard-{i:05d}" for i in range(len(shards))], out, tok, cfg,
           sum(r["num_tokens"] for r in done.values()), overwrite, progress)
    if not keep_shards:
        shutil.rmtree(work, ignore_errors=True)
    s = ChunkStore.open(out)
    return IngestReport(out, s.num_docs, s.num_tokens, len(s), len(shards), len(shards) - len(tasks), total_bytes,
                        time.perf_counter() - t0, s.tokenizer_fingerprint)


def _merge(paths: list[Path], out: Path, tok: Any, cfg: dict, total: int, overwrite: bool, progress: bool) -> None:
    """Concatenates the shard stores into ``out`` like ``merge_stores``, but maps one shard at a time: pages of a
    mapped store count toward RSS, so mapping every shard at once would make RSS grow with the corpus."""
    from tqdm.auto import tqdm

    from pyretro.store import ChunkStore, ChunkStoreWriter
    from pyretro.store.importers import doc_batches

    with ChunkStoreWriter(out, cfg["chunk_len"], cfg["vocab_size"], tok, overwrite=overwrite,
                          buffer_tokens=WRITER_BUFFER_TOKENS) as w, \
            tqdm(total=total, desc="merge", unit="tok", unit_scale=True, disable=not progress) as bar:
        for p in paths:
            s = ChunkStore.open(p)
            off = s.doc_offsets
            for d0, d1 in doc_batches(off, WRITER_BUFFER_TOKENS // 4):
                a, b = int(off[d0]), int(off[d1])
                w.add_batch(np.array(s.tokens[a:b]), np.diff(off[d0:d1 + 1]))  # copy: no view keeps s mapped
                bar.update(b - a)
            del s, off


def _ingest_megatron(files, out, tokenizer, vocab_size, chunk_len, overwrite, progress, t0) -> IngestReport:
    from pyretro.store import ChunkStore, import_megatron

    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    import_megatron([str(f) for f in files], out, chunk_len=chunk_len, vocab_size=vocab_size, tokenizer=tok,
                    overwrite=overwrite, progress=progress)
    s = ChunkStore.open(out)
    nbytes = sum(f.stat().st_size for f in files)
    return IngestReport(out, s.num_docs, s.num_tokens, len(s), 1, 0, nbytes, time.perf_counter() - t0,
                        s.tokenizer_fingerprint)
