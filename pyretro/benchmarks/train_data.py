"""Training data loader benchmark: ``make_loader`` over a ``RetroDataset`` (samples + k neighbours with
continuation) vs the training throughput of a small Retro model on the same batches.

Rows follow ``pyretro.benchmarks``: ``time_ms`` = loader time per batch (steady state, after the first batch),
``baseline`` = per-sample ``__getitem__`` + ``default_collate`` (the usual map-style path) on one process,
``ratio`` = baseline_ms / time_ms. ``model_ms`` = one Retro training step (forward + backward, no optimizer)
on ``model_batch`` real samples, scaled to the loader's batch size, ``headroom`` = model_ms / time_ms: how many times faster than the model consumes
batches the loader produces them (> 1: the loader is not the bottleneck). On a shared machine wall times are
noisy, so ``cpu_ms`` / ``model_cpu_ms`` / ``cpu_headroom`` repeat the comparison in CPU time of this process
(for ``workers > 0`` that counts only the main process's share: receiving the batches).

The store is random tokens in documents of 1..4000 tokens; the neighbour table holds random ids filtered by
Retro's sample-group exclusion (the loader's cost does not depend on which ids). Both sides run with ``threads``
torch / pyretro threads (default 1: on a shared machine, idle-spinning pool threads made multi-thread CPU
timings meaningless; 0 keeps the current settings). Overrides: see DEFAULTS.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from pyretro.benchmarks._params import resolve

DEFAULTS: dict[str, Any] = {
    "tokens": 4_000_000, "vocab": 4096, "chunk_len": 64, "k": 2, "seq": 2048, "batch": 8, "small_seq": 256,
    "small_batch": 16, "batches": 40, "workers": 2, "d_model": 128, "layers": 6, "heads": 2, "model_batch": 1,
    "reps": 2, "seed": 0, "threads": 1,
}
QUICK = {"tokens": 700_000, "batches": 8, "reps": 1}
# A small model is the strict case: the faster the model consumes batches, the less headroom the loader has.


class _RandomIndex:
    """Stands in for a faiss index: random candidate ids (deterministic), so no embedding work is timed."""

    def __init__(self, ntotal: int, seed: int) -> None:
        self.d, self.ntotal, self.rng = 1, ntotal, np.random.default_rng(seed)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(q), k), np.float32), self.rng.integers(0, self.ntotal, (len(q), k), dtype=np.int64)


def build_fixture(root: Path, num_tokens: int, vocab: int, chunk_len: int, k: int, chunks_per_sample: int,
                  seed: int = 0):
    """(store, neighbour table path) in ``root``: random documents, random neighbours with group exclusion."""
    from pyretro.retrieval import build_neighbor_table, groups_from_sample_length
    from pyretro.store import ChunkStore, ChunkStoreWriter

    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 4000, size=num_tokens // 2000 + 1)
    lens = lens[np.cumsum(lens) <= num_tokens]
    with ChunkStoreWriter(root / "store", chunk_len=chunk_len, vocab_size=vocab, fsync=False) as w:
        w.add_batch(rng.integers(1, vocab, size=int(lens.sum()), dtype=np.int64), lens)
    store = ChunkStore.open(root / "store")
    n = len(store)
    table = build_neighbor_table(root / "nb", _RandomIndex(n, seed), np.zeros((n, 1), np.float32), store, k=k,
                                 groups=groups_from_sample_length(n, chunks_per_sample), progress=False)
    return store, table


def _loader_ms(loader: DataLoader, batches: int) -> tuple[float, float]:
    """Steady-state (wall ms, this process's CPU ms) per batch: the first batch (worker start-up) is not timed."""
    it = iter(loader)
    next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    got = 0
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            break
        got += 1
    n = max(got, 1)
    out = ((time.perf_counter() - t0) * 1e3 / n, (time.process_time() - c0) * 1e3 / n)
    del it
    return out


def _median2(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _model_step_ms(batch: dict, p: dict, reps: int, device: torch.device) -> tuple[float, float]:
    from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel, lm_loss

    torch.manual_seed(p["seed"])
    S = batch["tokens"].shape[1]
    gpt = GPT(GPTConfig(vocab_size=p["vocab"], d_model=p["d_model"], n_layers=p["layers"], n_heads=p["heads"],
                        rotary_fraction=0.5, max_seq_len=max(S, 2048)))
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=p["chunk_len"], num_neighbors=p["k"])).to(device).train()
    batch = {key: v.to(device) for key, v in batch.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(batch["tokens"], batch["neighbors"], batch["neighbor_mask"])
        lm_loss(logits, batch["tokens"], batch["loss_mask"]).backward()
        sync()

    step()  # warm-up
    times = []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
    return _median2(times)


def run(device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    """``device`` is where the model step runs (the loader always runs on the CPU; with CUDA it pins memory)."""
    p = resolve(DEFAULTS, QUICK, quick, overrides)
    threads = int(p["threads"])
    old = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)  # pyretro's kernels follow torch's count
    try:
        return _run(p, torch.device(device))
    finally:
        torch.set_num_threads(old)


def _run(p: dict, device: torch.device) -> list[dict]:
    from pyretro.train import RetroDataset, make_loader

    m, k = p["chunk_len"], p["k"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pyretro-bench-train-data-") as tmp:
        store, table = build_fixture(Path(tmp), p["tokens"], p["vocab"], m, k, p["seq"] // m, p["seed"])
        for seq, B in ((p["seq"], p["batch"]), (p["small_seq"], p["small_batch"])):
            # the exclusion warning (small_seq samples are not the table's groups) is irrelevant for timing
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = RetroDataset(store, table, seq_len=seq, k=k)
            nb = min(p["batches"], len(ds) // B - 1)
            shape = f"B={B},S={seq},chunk={m},k={k},r={2 * m},store_tokens={store.num_tokens},threads={p['threads']}"
            base = DataLoader(ds, batch_size=B, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(0))
            base_ms, _ = _median2([_loader_ms(base, nb) for _ in range(p["reps"])])
            # CPU: a step on model_batch samples scaled to B (CPU time is ~linear in B); GPU: the whole batch
            mb = B if device.type == "cuda" else max(1, min(p["model_batch"], B))
            model_ms, model_cpu = (x * B / mb for x in _model_step_ms(ds.get_batch(np.arange(mb)), p, p["reps"],
                                                                     device))
            for workers in (0, p["workers"]):
                ms, cpu = _median2([_loader_ms(make_loader(ds, B, seed=0, num_workers=workers,
                                                            pin_memory=device.type == "cuda"), nb)
                                    for _ in range(p["reps"])])
                rows.append({
                    "name": f"make_loader workers={workers}", "shape": shape, "time_ms": ms,
                    "baseline": "per-sample getitem + default_collate", "baseline_ms": base_ms,
                    "ratio": base_ms / ms, "samples_s": B / ms * 1e3, "tokens_s": B * seq / ms * 1e3,
                    "model": f"retro d={p['d_model']} layers={p['layers']} train step", "model_ms": model_ms,
                    "model_tokens_s": B * seq / model_ms * 1e3, "headroom": model_ms / ms,
                    # CPU time of the main process: load-independent; with workers only the hand-over is counted
                    "cpu_ms": cpu, "model_cpu_ms": model_cpu, "cpu_headroom": model_cpu / max(cpu, 1e-6),
                })
    return rows
