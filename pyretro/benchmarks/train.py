"""Training-loop benchmark: tokens/s of full optimizer steps (forward, backward, clip, AdamW, schedule,
loader) through :func:`pyretro.train.train`, GPT vs Retro on the same decoder.

Rows follow ``pyretro.benchmarks``: the GPT step is the baseline, ``ratio`` = gpt_ms / retro_ms (> 1 would
mean Retro is faster) and ``cost_x`` = retro_ms / gpt_ms (median of per-round ratios), the slowdown the
papers quote (~1.25x from scratch); ``cpu_ms`` / ``cost_x_cpu`` use this process's CPU time, which a shared
machine's load disturbs much less than wall time. Random tokens and neighbours in memory, so only model +
optimizer + batching are timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import torch

from pyretro.benchmarks._params import resolve

DEFAULTS: dict[str, Any] = {
    "layers": 12,  # CCA in layers 6, 9, 12 (Megatron's default)
    "d_model": 256,
    "heads": 4,
    "vocab": 4096,
    "seq": 512,
    "batch": 2,
    "chunk_len": 64,
    "k": 2,
    "encoder_d_model": 0,  # Retro encoder width (0 = d_model, the default; RETRO used 896 under wider decoders)
    "steps": 4,  # timed optimizer steps per run (after one warm-up step)
    "rounds": 3,  # GPT and Retro runs alternate this many times; medians over rounds
    "activation_checkpointing": False,
    "threads": 0,  # torch intra-op threads for the run (0 = leave torch's setting)
    "seed": 0,
}
QUICK = {"layers": 6, "d_model": 128, "heads": 4, "seq": 256, "batch": 2, "steps": 2, "rounds": 1, "vocab": 2048}


class _RandomRetroData:
    """Map-style, batch contract: random tokens and neighbours (timing only)."""

    def __init__(self, n: int, seq: int, vocab: int, chunk: int, k: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, vocab, (n, seq), generator=g)
        self.neighbors = torch.randint(0, vocab, (n, seq // chunk, k, 2 * chunk), generator=g)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[i], "loss_mask": torch.ones(self.tokens.shape[1], dtype=torch.bool),
                "neighbors": self.neighbors[i], "neighbor_mask": torch.ones(self.neighbors.shape[1:], dtype=torch.bool)}


def _time_run(kind: str, p: dict[str, Any], device: str, data: _RandomRetroData) -> tuple[float, float]:
    """(median wall ms, median process-CPU ms) per optimizer step over the timed steps (warm-up dropped)."""
    from pyretro.train import load_config, train

    wall: list[float] = []
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(None, [
            f"--model.kind={kind}", f"--model.gpt.vocab_size={p['vocab']}", f"--model.gpt.d_model={p['d_model']}",
            f"--model.gpt.n_layers={p['layers']}", f"--model.gpt.n_heads={p['heads']}",
            f"--model.gpt.max_seq_len={p['seq']}", f"--model.retro.chunk_len={p['chunk_len']}",
            f"--model.retro.num_neighbors={p['k']}", f"--data.seq_len={p['seq']}", "--data.num_workers=0",
            f"--train.steps={p['steps'] + 1}", f"--train.batch_size={p['batch']}", f"--train.device={device}",
            f"--train.out_dir={out}", "--train.progress=false", "--train.plot=false", "--train.eval_interval=0",
            "--train.ckpt_interval=0", f"--train.seed={p['seed']}",
            f"--train.activation_checkpointing={str(bool(p['activation_checkpointing'])).lower()}",
            f"--model.retro.encoder_d_model={p['encoder_d_model'] or 'none'}",
        ])

        def on_step(step: int, metrics: dict[str, float]) -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            wall.append(time.perf_counter())
            cpu.append(time.process_time())

        wall.append(time.perf_counter())
        cpu.append(time.process_time())
        train(cfg, train_data=data, on_step=on_step)

    def med(ts: list[float]) -> float:  # per-step differences; the first step (warm-up) is dropped
        return statistics.median(b - a for a, b in zip(ts[1:-1], ts[2:], strict=True)) * 1e3

    return med(wall), med(cpu)


def run(device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    p = resolve(DEFAULTS, QUICK, quick, overrides)
    if p["seq"] % p["chunk_len"]:
        raise ValueError(f"seq={p['seq']} must be a multiple of chunk_len={p['chunk_len']}")
    n = p["batch"] * (p["steps"] + 1)
    data = _RandomRetroData(n, p["seq"], p["vocab"], p["chunk_len"], p["k"], p["seed"])
    shape = {k: p[k] for k in ("layers", "d_model", "heads", "vocab", "seq", "batch", "chunk_len", "k")}
    shape["encoder_d_model"] = p["encoder_d_model"] or p["d_model"]
    threads = torch.get_num_threads()
    if p["threads"]:
        torch.set_num_threads(int(p["threads"]))
    times: dict[str, list[tuple[float, float]]] = {"gpt": [], "retro": []}
    try:
        for _ in range(p["rounds"]):  # alternate, so load changes hit both models alike
            for kind in times:
                times[kind].append(_time_run(kind, p, device, data))
    finally:
        torch.set_num_threads(threads)
    tokens = p["batch"] * p["seq"]
    ac = " +act-ckpt" if p["activation_checkpointing"] else ""
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    round_cost = statistics.median(r[0] / g[0] for g, r in zip(times["gpt"], times["retro"], strict=True))
    rows = []
    for kind in ("gpt", "retro"):
        row = {"name": f"train step {kind}{ac}", "shape": shape, "time_ms": wall[kind], "cpu_ms": cpu[kind],
               "tok_s": tokens / (wall[kind] / 1e3), "tok_s_cpu": tokens / (cpu[kind] / 1e3),
               "baseline": None, "baseline_ms": None, "ratio": None}
        if kind == "retro":
            row.update(baseline=f"train step gpt{ac}", baseline_ms=wall["gpt"], ratio=wall["gpt"] / wall["retro"],
                       cost_x=round_cost, cost_x_cpu=cpu["retro"] / cpu["gpt"])
        rows.append(row)
    return rows


__all__ = ["DEFAULTS", "QUICK", "run"]
