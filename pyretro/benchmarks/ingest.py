"""Ingest benchmark: throughput vs raw ``tokenizers`` batch encoding, and peak RSS on a large corpus.

Rows:
- ``ingest[workers=N]``: ``pyretro.data.ingest`` of a synthetic JSONL corpus (read, parse, tokenize, write
  shard stores, merge) vs ``Tokenizer.encode_batch_fast`` of the same texts already in memory, in the same
  process, using all cores (Rust threads), ids extracted to Python. ratio = baseline_ms / time_ms (1.0 = as fast
  as bare tokenization).
- ``ingest_rss``: ingest of the corpus and of one ``rss_copies`` times larger (the same file listed repeatedly)
  in a child process; peak RSS summed over the child and its workers (psutil, sampled every 20 ms) and the
  largest single process. Streaming holds if peak RSS does not grow with the corpus and stays under
  ``MEMORY_BOUND_MB`` per process. ratio = corpus MiB / peak RSS MiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_DOC_BYTES = 515  # average synthetic document incl. JSON framing (measured: 19.3 MB for 37500 docs)
# The memory bound ingest is designed to stay under, per process (interpreter + libraries ~60 MB, one
# ``batch_bytes`` text batch and its encodings, the store writer's buffer). The RSS rows check it on a corpus
# at least 4x larger.
MEMORY_BOUND_MB = 128  # average synthetic document size incl. JSON framing (measured)


def _corpus(dirpath: Path, mb: float, seed: int = 0) -> Path:
    from pyretro.data.synthetic import iter_documents, write_jsonl

    n_entities = max(1, int(mb * 1e6 / (4 * _DOC_BYTES)))
    return write_jsonl(dirpath / "corpus.jsonl", ({"text": d["text"]} for d in iter_documents(n_entities, 4, seed)))


def _texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def _baseline(tok: Any, texts: list[str], batch: int = 2000) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(texts), batch):
        enc = tok.encode_batch_fast(texts[i:i + batch], add_special_tokens=False)
        n += sum(len(e.ids) for e in enc)
    return time.perf_counter() - t0, n


_CHILD = """
import json, sys
from pyretro.data.ingest import ingest
a = json.loads(sys.argv[1])
r = ingest(a["inputs"], a["out"], tokenizer=a["tokenizer"], num_workers=a["workers"], shard_bytes=a["shard_bytes"],
           progress=False)
print(json.dumps({"num_tokens": r.num_tokens, "seconds": r.seconds, "input_bytes": r.input_bytes}))
"""


def _rss_child(args: dict) -> dict:
    import psutil

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    ps = psutil.Process(proc.pid)
    peak_total = peak_single = 0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [ps, *ps.children(recursive=True)]]
        except psutil.Error:
            rss = []
        if rss:
            peak_total = max(peak_total, sum(rss))
            peak_single = max(peak_single, max(rss))
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"ingest child failed ({proc.returncode}):\n{err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res.update(peak_rss_total=peak_total, peak_rss_single=peak_single)
    return res


def run(device: str = "cpu", quick: bool = False, **shape_overrides: Any) -> list[dict]:
    """``corpus_mb`` (default 24, quick 3), ``rss_copies`` (default 23: 552 MB >= 4 x 128 MiB; quick 2),
    ``vocab_size`` (8192), ``num_workers`` (list; default [1, CPU count]), ``rss_workers`` (default 1: one
    process, so MEMORY_BOUND_MB applies to the whole run), ``shard_mb`` (8)."""
    from pyretro.data.ingest import ingest
    from pyretro.data.tokenizer import save_tokenizer, train_bpe

    if device != "cpu":
        raise ValueError(f"device: ingestion runs on the CPU, got {device!r}")
    corpus_mb = float(shape_overrides.get("corpus_mb", 3 if quick else 24))
    copies = int(shape_overrides.get("rss_copies", 2 if quick else 23))
    vocab = int(shape_overrides.get("vocab_size", 8192))
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = shape_overrides.get("num_workers", sorted({1, ncpu}))
    rss_workers = int(shape_overrides.get("rss_workers", 1))
    shard_bytes = int(shape_overrides.get("shard_mb", 8) * 2**20)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pyretro-bench-ingest-") as d:
        d = Path(d)
        src = _corpus(d, corpus_mb)
        texts = _texts(src)
        tok = train_bpe(texts[:10000], vocab)
        tok_path = save_tokenizer(tok, d / "tokenizer.json")
        mb = src.stat().st_size / 1e6
        base_s, base_tokens = _baseline(tok, texts)
        del texts
        for w in workers:
            r = ingest(src, d / f"db{w}", tokenizer=tok, num_workers=w, shard_bytes=shard_bytes, progress=False)
            rows.append({
                "name": f"ingest[workers={w}]", "shape": f"{mb:.1f} MB JSONL, {r.num_docs} docs, vocab {vocab}",
                "time_ms": r.seconds * 1e3, "tokens_per_s": r.num_tokens / r.seconds, "MB_per_s": mb / r.seconds,
                "baseline": "tokenizers encode_batch_fast (all cores)", "baseline_ms": base_s * 1e3,
                "baseline_tokens_per_s": base_tokens / base_s, "ratio": base_s / r.seconds,
            })
        for c in sorted({1, copies}):
            res = _rss_child({"inputs": [str(src)] * c, "out": str(d / f"db_rss{c}"), "tokenizer": str(tok_path),
                              "workers": rss_workers, "shard_bytes": shard_bytes})
            big_mb = res["input_bytes"] / 1e6
            peak = res["peak_rss_total"] / 2**20
            rows.append({
                "name": "ingest_rss", "shape": f"{big_mb:.0f} MB JSONL ({c}x the corpus), workers={rss_workers}",
                "time_ms": res["seconds"] * 1e3, "tokens_per_s": res["num_tokens"] / res["seconds"],
                "MB_per_s": big_mb / res["seconds"], "peak_rss_total_mb": peak,
                "peak_rss_single_mb": res["peak_rss_single"] / 2**20, "bound_mb": MEMORY_BOUND_MB,
                "baseline": "corpus size", "baseline_ms": None, "ratio": res["input_bytes"] / 2**20 / peak,
                "goal_met": bool(peak <= MEMORY_BOUND_MB * rss_workers and res["input_bytes"] >= 4 * MEMORY_BOUND_MB * 2**20),
            })
    return rows
