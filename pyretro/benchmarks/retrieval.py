"""Retrieval benchmarks: embedding throughput, index build, neighbour query throughput, exclusion-filter
overhead and recall@2 of the ``auto`` index vs exact search.

Baselines, measured in the same process:
- embedding: the default sentence-transformers model (all-MiniLM-L6-v2) on the same chunk texts;
- index build/query: exact ``Flat`` search of the same queries (query), and the raw faiss search
  without filtering (filter overhead = filter time / search time);
- recall: exact inner-product search (``exact_search``).
Scale data: clustered random unit vectors (``dim`` 64) with 16 chunks per document; embedding speed:
pseudo-English chunk texts of ~48 words (~64 tokens).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

DEFAULTS: dict[str, Any] = {
    "num_chunks": 1_000_000, "dim": 64, "num_queries": 20_000, "chunks_per_doc": 16, "k": 20,
    "recall_sample": 1000, "embed_chunks": 4096, "st_chunks": 256, "words_per_chunk": 48, "seed": 0,
    "centers": 20_000, "noise": 0.6,
}
QUICK = {"num_chunks": 60_000, "num_queries": 2000, "embed_chunks": 512, "st_chunks": 32, "recall_sample": 200}


def _timed(fn, *a, **kw) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, (time.perf_counter() - t) * 1000


def clustered_unit_vectors(n: int, dim: int, centers: int, noise: float, seed: int) -> np.ndarray:
    """Unit vectors around ``centers`` random directions (embeddings of a topical corpus, roughly)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 1 << 18):
        e = min(s + (1 << 18), n)
        part = c[rng.integers(0, centers, e - s)] + noise / np.sqrt(dim) * rng.standard_normal((e - s, dim)).astype(np.float32)
        x[s:e] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x


def pseudo_texts(n: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    syll = np.array(["ka", "lo", "mi", "ren", "tu", "sa", "vo", "en", "dri", "pa", "the", "of", "and", "to"])
    vocab = ["".join(rng.choice(syll, int(rng.integers(1, 4)))) for _ in range(5000)]
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    ids = rng.choice(len(vocab), size=(n, words), p=zipf / zipf.sum())
    return [" ".join(vocab[i] for i in row) + "." for row in ids]


def _embed_rows(cfg: dict, device: str) -> list[dict]:
    from pyretro.retrieval.embed import _embed_sorted
    from pyretro.retrieval.embedders import make_embedder

    rows: list[dict] = []
    texts = pseudo_texts(cfg["embed_chunks"], cfg["words_per_chunk"], cfg["seed"])
    dev = "cuda" if device == "cuda" else "cpu"
    base_ms_per_chunk = None
    try:
        st = make_embedder("st", device=dev, batch_size=64)
        n = min(cfg["st_chunks"], len(texts))
        _embed_sorted(st, texts[:8], 64)  # warm-up
        _, ms = _timed(_embed_sorted, st, texts[:n], 64)
        base_ms_per_chunk = ms / n
        rows.append({"name": "embed st:all-MiniLM-L6-v2 (384-d)", "shape": {"chunks": n, "words": cfg["words_per_chunk"]},
                     "time_ms": ms, "chunks_per_s": n / ms * 1000, "baseline": "self", "baseline_ms": ms, "ratio": 1.0})
        from pyretro.retrieval.embedders import default_sentence_transformer_path

        hf = make_embedder(f"hf:{default_sentence_transformer_path()}", device=dev, batch_size=64)
        _, ms = _timed(_embed_sorted, hf, texts[:n], 64)
        rows.append({"name": "embed hf:MiniLM dir, mean pool (384-d)", "shape": {"chunks": n},
                     "time_ms": ms, "chunks_per_s": n / ms * 1000, "baseline": "st", "baseline_ms": base_ms_per_chunk * n,
                     "ratio": base_ms_per_chunk * n / ms})
    except Exception as e:  # the optional model is not installed: report hashing alone
        rows.append({"name": "embed st (skipped)", "shape": {"error": type(e).__name__}})
    for dim in (64, 256):
        emb = make_embedder(f"hashing:{dim}")
        _, ms = _timed(_embed_sorted, emb, texts, 4096)
        row = {"name": f"embed hashing:{dim}", "shape": {"chunks": len(texts)}, "time_ms": ms,
               "chunks_per_s": len(texts) / ms * 1000}
        if base_ms_per_chunk:
            row.update(baseline="st", baseline_ms=base_ms_per_chunk * len(texts),
                       ratio=base_ms_per_chunk * len(texts) / ms)
        rows.append(row)
    return rows


def _index_rows(cfg: dict) -> list[dict]:
    import faiss

    from pyretro.retrieval.filter import Exclusion, keep_first
    from pyretro.retrieval.index import build_index, recall
    from pyretro.retrieval.query import default_k_search, search_filtered

    n, dim, nq, k = cfg["num_chunks"], cfg["dim"], cfg["num_queries"], cfg["k"]
    x, gen_ms = _timed(clustered_unit_vectors, n, dim, cfg["centers"], cfg["noise"], cfg["seed"])
    chunk_doc = np.arange(n, dtype=np.int64) // cfg["chunks_per_doc"]
    (index, h), build_ms = _timed(build_index, x, None, "auto", progress=False)
    shape = {"N": n, "dim": dim, "index": h["factory"], "nprobe": h["nprobe"]}
    rows = [{"name": "index build (auto: train+add)", "shape": shape, "time_ms": build_ms,
             "train_ms": h.get("train_seconds", 0) * 1000, "memory_MB": h["memory_bytes"] / 2**20}]
    rng = np.random.default_rng(cfg["seed"] + 1)
    qids = np.sort(rng.choice(n, nq, replace=False))
    q = np.ascontiguousarray(x[qids])
    ks = default_k_search(k)
    excl = Exclusion(chunk_doc, chunk_doc)
    search_filtered(index, q[:256], qids[:256], excl, k, ks)  # warm-up
    out, query_ms = _timed(search_filtered, index, q, qids, excl, k, ks)
    (_, cand), search_ms = _timed(index.search, q, ks)
    _, filter_ms = _timed(lambda: keep_first(cand, excl.excluded(qids, cand), k))
    flat = faiss.IndexFlatIP(dim)
    flat.add(x)
    nflat = min(nq, 2000)
    _, flat_ms = _timed(flat.search, q[:nflat], ks)
    flat_ms_all = flat_ms * nq / nflat
    rows.append({"name": f"query top-{ks} + exclusion, keep {k}", "shape": {**shape, "queries": nq},
                 "time_ms": query_ms, "chunks_per_s": nq / query_ms * 1000, "baseline": f"Flat exact ({nflat} q, scaled)",
                 "baseline_ms": flat_ms_all, "ratio": flat_ms_all / query_ms,
                 "padded_share": float((out < 0).mean())})
    rows.append({"name": "exclusion filter (numpy) vs search", "shape": {"queries": nq, "k_search": ks, "k": k},
                 "time_ms": filter_ms, "baseline": "faiss search", "baseline_ms": search_ms,
                 "ratio": search_ms / filter_ms, "overhead_pct": 100 * filter_ms / search_ms})
    r2, rec_ms = _timed(recall, index, x, cfg["recall_sample"], 2)
    rows.append({"name": "recall@2 auto vs exact", "shape": {**shape, "sample": cfg["recall_sample"]},
                 "time_ms": rec_ms, "recall@2": r2, "data_gen_ms": gen_ms})
    return rows


def run(device: str = "cpu", quick: bool = False, **shape_overrides: Any) -> list[dict]:
    cfg = {**DEFAULTS, **(QUICK if quick else {}), **shape_overrides}
    parts = str(cfg.pop("parts", "embed,index")).split(",")
    rows: list[dict] = []
    if "embed" in parts:
        rows += _embed_rows(cfg, device)
    if "index" in parts:
        rows += _index_rows(cfg)
    return rows
