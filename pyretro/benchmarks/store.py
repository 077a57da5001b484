"""Benchmark of ChunkStore.gather (chunk + continuation rows for random neighbour ids).

Baselines, measured in the same process on the same ids:
  (a) numpy fancy indexing on an np.memmap of the same tokens, continuation and mask built in numpy;
  (b) a plain copy (np.copyto) of as many bytes as gather writes (the int64 token rows).
Both mappings are fully touched first (warm page cache and page tables); a cold single call after
evicting the token file from the page cache is reported separately.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULTS: dict[str, Any] = {
    "num_queries": 1024,
    "k": 2,
    "chunk_len": 64,
    "r": 128,
    "store_tokens": 1 << 29,  # 512M uint16 tokens = 1 GiB
    "vocab_size": 50257,
    "mean_doc_len": 2000,
    "reps": 100,
    "cache_dir": os.environ.get("PYRETRO_BENCH_STORE", "/tmp/pyretro_bench_store"),
    "seed": 0,
    "threads": None,  # None: pyretro's current setting (default torch.get_num_threads())
}
QUICK = {"store_tokens": 1 << 21, "reps": 5}


def build_store(cache_dir: str, num_tokens: int, chunk_len: int, vocab_size: int, mean_doc_len: int,
                seed: int) -> Path:
    """A store of random documents, built once and reused (cached by size/chunk_len/seed)."""
    from pyretro.store import ChunkStore, ChunkStoreWriter

    path = Path(cache_dir) / f"tok{num_tokens}_cl{chunk_len}_v{vocab_size}_s{seed}"
    try:
        ChunkStore.open(path)
        return path
    except ValueError:
        pass
    rng = np.random.default_rng(seed)
    batch = 1 << 24
    with ChunkStoreWriter(path, chunk_len=chunk_len, vocab_size=vocab_size, overwrite=True, fsync=False) as w:
        done = 0
        while done < num_tokens:
            n = min(batch, num_tokens - done)
            lens = rng.integers(1, 2 * mean_doc_len, n // mean_doc_len + 2)
            lens = lens[np.cumsum(lens) <= n]
            lens = np.append(lens, n - lens.sum()) if lens.sum() < n else lens
            w.add_batch(rng.integers(0, vocab_size, n, dtype=np.uint16), lens)
            done += n
    return path


def numpy_gather(tok: np.ndarray, chunk_doc: np.ndarray, doc_offsets: np.ndarray, doc_chunks: np.ndarray,
                 ids: np.ndarray, chunk_len: int, r: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The common numpy way: index arithmetic, fancy indexing on the memmap, np.where for padding."""
    valid = ids >= 0
    safe = np.where(valid, ids, 0)
    d = chunk_doc[safe]
    start = doc_offsets[d] + (safe - doc_chunks[d]) * chunk_len
    end = np.where(valid, doc_offsets[d + 1], start)
    idx = start[..., None] + np.arange(r)
    mask = idx < end[..., None]
    rows = tok[np.where(mask, idx, 0)].astype(np.int64)
    return np.where(mask, rows, pad_id), mask


def _touch(a: np.ndarray) -> None:
    """Faults in every page of a mapping (and reads it into the page cache)."""
    step = max(1, 4096 // a.itemsize)
    int(a[::step].sum())


def _time(fn, id_sets: list[np.ndarray], reps: int) -> float:
    """Median milliseconds per call; id_sets[0] warms up, then one fresh id array per call."""
    fn(id_sets[0])
    times = []
    for i in range(reps):
        ids = id_sets[1 + i % (len(id_sets) - 1)]
        t0 = time.perf_counter()
        fn(ids)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _evict(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (AttributeError, OSError):
        return False


def run(device: str = "cpu", quick: bool = False, **shape_overrides: Any) -> list[dict]:
    if device != "cpu":
        raise ValueError("the chunk store gather benchmark runs on the CPU (device='cpu')")
    from pyretro._ext import pinned_threads

    cfg = {**DEFAULTS, **(QUICK if quick else {}), **shape_overrides}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown benchmark parameters: {sorted(unknown)}")
    with pinned_threads(cfg["threads"]):
        return _run(cfg, quick)


def _run(cfg: dict[str, Any], quick: bool) -> list[dict]:
    from pyretro._ext import _C, sync_threads

    sync_threads()  # (a no-op when pinned) so the reported count is the one the gathers use
    from pyretro.store import ChunkStore

    q, k, cl, r = cfg["num_queries"], cfg["k"], cfg["chunk_len"], cfg["r"]
    path = build_store(cfg["cache_dir"], cfg["store_tokens"], cl, cfg["vocab_size"], cfg["mean_doc_len"],
                       cfg["seed"])
    rng = np.random.default_rng(cfg["seed"] + 1)
    reps = cfg["reps"]
    num_chunks = int(np.fromfile(path / "doc_chunks.bin", np.int64)[-1])
    # Fresh ids for every call: repeating a set would serve its rows from the CPU caches.
    id_sets = [rng.integers(0, num_chunks, (q, k)) for _ in range(3 * reps + 3)]
    out = np.empty((q, k, r), np.int64)
    mask = np.empty((q, k, r), np.bool_)
    nbytes = out.nbytes
    files = {n: path / f"{n}.bin" for n in ("tokens", "chunk_doc", "doc_offsets", "doc_chunks")}

    def np_maps() -> dict[str, np.ndarray]:
        tdt = np.uint16 if files["tokens"].stat().st_size == 2 * cfg["store_tokens"] else np.uint32
        return {n: np.memmap(f, dtype=tdt if n == "tokens" else np.int64, mode="r") for n, f in files.items()}

    # Cold first, while nothing in this process maps the files: one call each after evicting them from
    # the page cache (needs posix_fadvise; skipped in quick mode).
    cold = None
    if not quick and all(_evict(f) for f in files.values()):
        store = ChunkStore.open(path)
        t0 = time.perf_counter()
        store.gather(id_sets[-1], r=r, out=out, out_mask=mask)
        t_cold = (time.perf_counter() - t0) * 1e3
        del store
        for f in files.values():
            _evict(f)
        m = np_maps()
        t0 = time.perf_counter()
        numpy_gather(m["tokens"], m["chunk_doc"], m["doc_offsets"], m["doc_chunks"], id_sets[-2], cl, r)
        t_np_cold = (time.perf_counter() - t0) * 1e3
        del m
        cold = (t_cold, t_np_cold)

    store = ChunkStore.open(path)
    m = np_maps()
    for a in (store.tokens, store.chunk_doc, store.doc_offsets, store.doc_chunks, *m.values()):
        _touch(a)  # warm: whole files in the page cache and every page mapped, on both sides
    src, dst = np.ones(nbytes // 8, np.int64), np.empty(nbytes // 8, np.int64)

    def np_gather(ids):
        return numpy_gather(m["tokens"], m["chunk_doc"], m["doc_offsets"], m["doc_chunks"], ids, cl, r)

    ref_t, ref_m = np_gather(id_sets[0])
    got_t, got_m = store.gather(id_sets[0], r=r)
    if not (np.array_equal(ref_t, got_t) and np.array_equal(ref_m, got_m)):
        raise AssertionError("gather and the numpy baseline disagree")

    t_ours = _time(lambda ids: store.gather(ids, r=r, out=out, out_mask=mask), id_sets[0:reps + 1], reps)
    t_alloc = _time(lambda ids: store.gather(ids, r=r), id_sets[reps + 1:2 * reps + 2], reps)
    t_np = _time(np_gather, id_sets[2 * reps + 2:], reps)
    t_cp = _time(lambda ids: np.copyto(dst, src), id_sets, reps)
    ram = ChunkStore.open(path, in_memory=True)  # the same store read into RAM (huge pages where available)
    t_ram = _time(lambda ids: ram.gather(ids, r=r, out=out, out_mask=mask), id_sets[reps + 1:2 * reps + 2], reps)

    shape = {"ids": [q, k], "r": r, "chunk_len": cl, "store_tokens": store.num_tokens,
             "store_GB": round(store.tokens.nbytes / 1e9, 3), "token_dtype": store.tokens.dtype.name,
             "threads": _C.get_num_threads()}

    def row(name, cache, ms, base, base_ms):
        return {"name": name, **shape, "cache": cache, "time_ms": round(ms, 4),
                "GB/s": round(nbytes / ms / 1e6, 2), "baseline": base, "baseline_ms": round(base_ms, 4),
                "ratio": round(base_ms / ms, 2)}

    rows = [
        row("gather (out buffers given)", "warm", t_ours, "numpy memmap fancy indexing", t_np),
        row("gather (out buffers given)", "warm", t_ours, "memcpy same bytes", t_cp),
        row("gather (allocating)", "warm", t_alloc, "numpy memmap fancy indexing", t_np),
        row("gather, store in RAM (in_memory=True)", "in RAM", t_ram, "memcpy same bytes", t_cp),
        row("gather, store in RAM (in_memory=True)", "in RAM", t_ram, "numpy memmap fancy indexing", t_np),
    ]
    if cold is not None:
        rows.append(row("gather (out buffers given)", "cold, 1 call", cold[0], "numpy memmap fancy indexing",
                        cold[1]))
    return rows
