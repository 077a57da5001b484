"""Rotary embedding benchmark: ``pyretro.ops.rope`` vs the usual eager PyTorch rope (HF ``rotate_half``
style, cos/sin built per call), plus achieved bandwidth vs a device copy of the same bytes.

Rows follow ``pyretro.benchmarks``: ``ratio`` = baseline_ms / time_ms (> 1 = pyretro faster). ``gb_s``
counts the bytes a rope must move (read x, write out); ``copy_frac`` = gb_s / the same-size copy's GB/s
(``numpy.copyto`` on CPU, ``Tensor.copy_`` on CUDA; the GPU goal is >= 0.8). Overrides: B, S (or N), H, D, dtype, reps.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from pyretro.ops.reference.rope import rope_eager_baseline
from pyretro.ops.rope import rope, rope_, rope_qk

DEFAULTS: dict[str, Any] = {"B": 4, "S": 2048, "H": 8, "D": 64, "dtype": None, "reps": 20}
QUICK = {"S": 256, "reps": 3}


def _cuda_graph(fn, inner: int):
    """``inner`` calls of ``fn`` captured in a CUDA graph (None if ``fn`` cannot be captured, e.g. it syncs)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture, as torch requires
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(inner):
                fn()
        return graph
    except Exception:  # any capture failure means: time eager launches instead
        torch.cuda.synchronize()
        return None


def time_ms(fn, device: str, reps: int, inner: int = 1, graph: bool = True) -> float:
    """Median milliseconds per call.

    On CUDA: CUDA events around ``inner`` calls replayed from a CUDA graph, i.e. device time without the
    Python/launch overhead (a ~5 us kernel would otherwise measure the host); eager launches if the
    function cannot be captured. ``graph=False`` for functions that sync the device (never captured).
    """
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
        graph = _cuda_graph(fn, inner) if graph else None
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if graph is not None:
                graph.replay()
            else:
                for _ in range(inner):
                    fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
        return statistics.median(times)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) * 1e3 / inner)
    return statistics.median(times)


def copy_gb_s(nbytes: int, device: str, reps: int) -> float:
    """Measured copy bandwidth (read + write counted) for a buffer of ``nbytes``: ``numpy.copyto`` on CPU
    (torch's CPU copy_ is slower than memcpy on a busy machine), ``Tensor.copy_`` on CUDA."""
    if device == "cpu":
        src = np.random.default_rng(0).integers(0, 255, size=nbytes, dtype=np.uint8)
        dst = np.empty_like(src)
        ms = time_ms(lambda: np.copyto(dst, src), device, reps)
    else:
        src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
        dst = torch.empty_like(src)
        ms = time_ms(lambda: dst.copy_(src), device, reps, 20)
    return 2 * nbytes / ms / 1e6


def _row(name: str, shape: str, ms: float, baseline: str, base_ms: float, moved: int, copy: float) -> dict:
    gb = moved / ms / 1e6
    return {"name": name, "shape": shape, "time_ms": ms, "baseline": baseline, "baseline_ms": base_ms,
            "ratio": base_ms / ms, "gb_s": gb, "copy_gb_s": copy, "copy_frac": gb / copy}


def _bench_shape(x: torch.Tensor, k: torch.Tensor, pos: torch.Tensor, device: str, reps: int) -> list[dict]:
    inner = 20 if device == "cuda" else 1
    b, s, h, d = x.shape
    dt = str(x.dtype).removeprefix("torch.")
    nbytes = x.numel() * x.element_size()
    copy = copy_gb_s(nbytes, device, reps)
    rows = []
    for rd in (d, d // 2):
        shape = f"B={b},S={s},H={h},D={d},rotary_dim={rd},{dt}"
        base_ms = time_ms(lambda rd=rd: rope_eager_baseline(x, pos, rotary_dim=rd), device, reps, inner)
        ours_ms = time_ms(lambda rd=rd: rope(x, pos, rotary_dim=rd), device, reps, inner)
        y = x.clone()
        inpl_ms = time_ms(lambda rd=rd, y=y: rope_(y, pos, rotary_dim=rd), device, reps, inner)
        rows.append(_row("rope", shape, ours_ms, "eager rotate_half", base_ms, 2 * nbytes, copy))
        rows.append(_row("rope_ (in place)", shape, inpl_ms, "eager rotate_half", base_ms, 2 * nbytes, copy))
    # fused q+k (GQA: k has fewer heads) vs two eager calls
    rd = d // 2
    base_ms = time_ms(lambda: (rope_eager_baseline(x, pos, rotary_dim=rd), rope_eager_baseline(k, pos, rotary_dim=rd)),
                      device, reps, inner)
    ours_ms = time_ms(lambda: rope_qk(x, k, pos, rotary_dim=rd), device, reps, inner)
    moved = 2 * (nbytes + k.numel() * k.element_size())
    shape = f"B={b},S={s},Hq={h},Hk={k.shape[2]},D={d},rotary_dim={rd},{dt}"
    rows.append(_row("rope_qk (fused q+k)", shape, ours_ms, "2x eager rotate_half", base_ms, moved, copy))
    return rows


def run(device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    cfg = {**DEFAULTS, **(QUICK if quick else {})}
    if "N" in overrides and "S" not in overrides:
        overrides["S"] = overrides["N"]
    cfg.update({k: v for k, v in overrides.items() if k in DEFAULTS and v is not None})
    dtype = getattr(torch, cfg["dtype"]) if cfg["dtype"] else (torch.bfloat16 if device == "cuda" else torch.float32)
    b, s, h, reps = int(cfg["B"]), int(cfg["S"]), int(cfg["H"]), int(cfg["reps"])
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows: list[dict] = []
    for d in [int(cfg["D"])] if "D" in overrides else [64, 128]:
        x = torch.randn(b, s, h, d, generator=gen).to(device=device, dtype=dtype)
        k = torch.randn(b, s, max(1, h // 4), d, generator=gen).to(device=device, dtype=dtype)
        rows += _bench_shape(x, k, torch.arange(s, device=device), device, reps)
    return rows
