"""Neighbour gather benchmark: ``pyretro.ops.gather_neighbors`` on a synthetic in-memory store, as achieved
GB/s against a same-size device copy (CPU: ``numpy.copyto``; CUDA: ``Tensor.copy_``), plus the
plain-PyTorch reference as a second baseline.

Bytes counted per row: r tokens read at the store's width + r int64 written + r mask bytes written.
Rows follow ``pyretro.benchmarks``: ``ratio`` = baseline_ms / time_ms; ``copy_frac`` = gb_s / copy GB/s.
Overrides: tokens (store size), chunk_len, r, ids (rows per call), reps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pyretro.benchmarks.rope import copy_gb_s, time_ms
from pyretro.ops.gather import DeviceChunkStore, gather_neighbors
from pyretro.ops.reference.gather import gather_neighbors_reference

DEFAULTS: dict[str, Any] = {"tokens": 50_000_000, "chunk_len": 64, "r": 128, "ids": 16384, "reps": 10}
QUICK = {"tokens": 2_000_000, "ids": 2048, "reps": 3}


def synthetic_store(num_tokens: int, chunk_len: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """uint16 tokens in documents of 1..4000 tokens, laid out like a real store (docs/store.md)."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 4000, size=num_tokens // 2000 + 1)
    lens = lens[np.cumsum(lens) <= num_tokens]
    tokens = rng.integers(0, 65000, size=int(lens.sum()), dtype=np.uint16)
    doc_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    doc_chunks = np.concatenate([[0], np.cumsum(-(-lens // chunk_len))]).astype(np.int64)
    chunk_doc = np.repeat(np.arange(len(lens), dtype=np.int64), np.diff(doc_chunks))
    return tokens, doc_offsets, doc_chunks, chunk_doc


def run(device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    cfg = {**DEFAULTS, **(QUICK if quick else {})}
    cfg.update({k: v for k, v in overrides.items() if k in DEFAULTS and v is not None})
    chunk_len, r, reps = int(cfg["chunk_len"]), int(cfg["r"]), int(cfg["reps"])
    arrays = synthetic_store(int(cfg["tokens"]), chunk_len)
    store = DeviceChunkStore.from_arrays(*arrays, chunk_len, device)
    rng = np.random.default_rng(1)
    rows: list[dict] = []
    inner = 20 if device == "cuda" else 1
    for n_ids in (256, int(cfg["ids"])):  # a Retro training batch (B=4, L=32, K=2), and a large one
        ids_np = rng.integers(0, len(store), size=n_ids)
        ids_np[::17] = -1
        ids = torch.from_numpy(ids_np).to(device)
        moved = n_ids * r * (store.tokens.element_size() + 8 + 1)
        copy = copy_gb_s(moved, device, reps)
        shape = f"ids={n_ids},r={r},chunk_len={chunk_len},store_tokens={store.num_tokens}"
        ms = time_ms(lambda ids=ids: gather_neighbors(store.tokens, store.doc_offsets, store.doc_chunks,
                                                      store.chunk_doc, ids, chunk_len, r),
                     device, reps, inner, graph=False)  # the id check syncs: eager launches
        ref_ms = time_ms(lambda ids=ids: gather_neighbors_reference(store.tokens, store.doc_offsets,
                                                                    store.doc_chunks, store.chunk_doc, ids,
                                                                    chunk_len, r), device, max(1, reps // 2),
                         graph=False)
        gb = moved / ms / 1e6
        rows.append({"name": "gather_neighbors", "shape": shape, "time_ms": ms, "baseline": "torch reference",
                     "baseline_ms": ref_ms, "ratio": ref_ms / ms, "gb_s": gb, "copy_gb_s": copy,
                     "copy_frac": gb / copy})
        if device == "cuda":  # without the one-sync id range check: device time (CUDA graph replay)
            ms = time_ms(lambda ids=ids: store.gather(ids, r=r, check_ids=False), device, reps, inner)
            gb = moved / ms / 1e6
            rows.append({"name": "gather_neighbors (check_ids=False)", "shape": shape, "time_ms": ms,
                         "baseline": "torch reference", "baseline_ms": ref_ms, "ratio": ref_ms / ms, "gb_s": gb,
                         "copy_gb_s": copy, "copy_frac": gb / copy})
    return rows
