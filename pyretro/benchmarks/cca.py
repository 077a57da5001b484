"""Chunked cross-attention benchmark: fused ``pyretro.ops.chunked_cross_attention`` (forward, forward+backward)
vs (a) the eager reference (shift, pad, reshape, matmul, masked softmax, matmul: how Retro code usually does it)
and (b) the same reshaping around ``torch.nn.functional.scaled_dot_product_attention`` (its fastest backend
that takes a boolean mask).

Rows follow ``pyretro.benchmarks``: ``ratio`` = baseline_ms / time_ms (> 1 = pyretro faster). ``gb_s`` counts
the minimum bytes the fused op moves (fwd: q, k, v, mask in, out + lse out; bwd adds dout, out, lse in and
dq, dk, dv out); ``tflops`` counts 4*B*N*H*K*R*D per forward (2.5x that for backward). Each row also checks the
fused result against the baseline (``max_err``). Overrides: B, N, chunk_len, K, R, H, D, dtype, reps, bias
(1: also rows with a learned position bias [H, chunk_len, R] and its gradient; SDPA then takes a float mask).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from pyretro.ops._cca_lib import fused_available
from pyretro.ops.cca import chunked_cross_attention
from pyretro.ops.reference.cca import chunked_cross_attention_ref

DEFAULTS: dict[str, Any] = {"B": 4, "N": 2048, "chunk_len": 64, "K": 2, "R": 128, "H": 8, "D": 64,
                            "dtype": None, "reps": 5, "head_dims": (64, 128), "bias": 1}
QUICK = {"N": 256, "reps": 2, "head_dims": (64,)}


def sdpa_cca(q, k, v, key_mask, chunk_len: int, scale: float | None = None,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    """Baseline (b): the reference's reshaping, attention by ``scaled_dot_product_attention`` (with a position
    bias: a float mask, bias where valid and -inf elsewhere)."""
    B, N, H, D = q.shape
    L, K, R = k.shape[1:4]
    C, n_att = chunk_len, N - (chunk_len - 1)
    if n_att <= 0:
        return torch.zeros_like(q)
    qs = F.pad(q[:, C - 1 :], (0, 0, 0, 0, 0, L * C - n_att)).reshape(B * L, C, H, D).transpose(1, 2)
    ks = k.permute(0, 1, 4, 2, 3, 5).reshape(B * L, H, K * R, D)
    vs = v.permute(0, 1, 4, 2, 3, 5).reshape(B * L, H, K * R, D)
    mask = key_mask.reshape(B * L, 1, 1, K * R)
    attn = mask
    if bias is not None:
        attn = torch.where(mask, bias.to(q.dtype).repeat(1, 1, K)[None], float("-inf"))
    o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=attn, scale=scale)
    o = torch.where(mask.any(-1, keepdim=True), o, 0.0)  # chunks without a valid key: 0, not NaN
    o = o.transpose(1, 2).reshape(B, L * C, H, D)[:, :n_att]
    return torch.cat([q.new_zeros(B, C - 1, H, D), o], dim=1)


def time_ms(fns: dict, device: str, reps: int) -> dict[str, float]:
    """Milliseconds per call of each function, measured in interleaved rounds (one call of each per round) so
    that load from other processes hits all of them alike. CPU: the minimum over rounds (the least disturbed
    run); CUDA: the median of CUDA-event timings."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    pick = statistics.median if device == "cuda" else min
    return {name: pick(ts) for name, ts in times.items()}


def _inputs(cfg: dict, D: int, device: str, dtype: torch.dtype):
    B, N, C, K, R, H = (cfg[x] for x in ("B", "N", "chunk_len", "K", "R", "H"))
    L = -(-N // C)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, N, H, D, generator=g).to(device, dtype)
    k = torch.randn(B, L, K, R, H, D, generator=g).to(device, dtype)
    v = torch.randn(B, L, K, R, H, D, generator=g).to(device, dtype)
    mask = (torch.rand(B, L, K, R, generator=g) > 0.1).to(device)
    return q, k, v, mask


def _bench_one(cfg: dict, D: int, device: str, dtype: torch.dtype) -> list[dict]:
    q, k, v, mask = _inputs(cfg, D, device, dtype)
    if not fused_available(q):
        raise RuntimeError(f"the fused CCA kernels are not available for {device}/D={D} (build pyretro._C)")
    C, reps = cfg["chunk_len"], cfg["reps"]
    B, N, H = q.shape[:3]
    L, K, R = k.shape[1:4]
    es = q.element_size()
    fwd_bytes = (q.numel() + 2 * k.numel() + q.numel()) * es + mask.numel() + B * N * H * 4
    bwd_bytes = fwd_bytes + (3 * q.numel() + 2 * k.numel()) * es + B * N * H * 4
    flops = 4.0 * B * N * H * K * R * D
    shape = f"B={B},N={N},C={C},K={K},R={R},H={H},D={D},{str(dtype).removeprefix('torch.')}"
    go = torch.randn_like(q)
    bias = torch.randn(H, C, R, generator=torch.Generator().manual_seed(1)).to(device)
    rows = []
    for with_bias in (False, True) if cfg["bias"] else (False,):
        b = bias if with_bias else None
        fns = {
            "fused": lambda *a, b=b: chunked_cross_attention(*a, C, bias=b),
            "eager matmul/softmax": lambda *a, b=b: chunked_cross_attention_ref(*a, C, bias=b),
            "sdpa on reshaped chunks": lambda *a, b=b: sdpa_cca(*a, C, bias=b),
        }
        label = "cca+bias" if with_bias else "cca"
        rows += _time_modes(fns, label, shape, q, k, v, mask, go, b, device, reps, fwd_bytes, bwd_bytes, flops)
    return rows


def _time_modes(fns, label, shape, q, k, v, mask, go, bias, device, reps, fwd_bytes, bwd_bytes, flops) -> list[dict]:
    """fwd and fwd+bwd rows of one set of functions (with a bias, it is a leaf whose gradient is computed too)."""
    def fwd(f):
        with torch.no_grad():
            return f(q, k, v, mask)

    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_())

    def fwd_bwd(f):
        for t in leaves:
            t.grad = None
        if bias is None:
            f(*leaves, mask).backward(go)
        else:
            f(*leaves[:3], mask, b=leaves[3]).backward(go)

    rows = []
    for mode, run_fn, nbytes, fl in (("fwd", fwd, fwd_bytes, flops), ("fwd+bwd", fwd_bwd, bwd_bytes, 3.5 * flops)):
        ms = time_ms({name: (lambda f=f, run_fn=run_fn: run_fn(f)) for name, f in fns.items()}, device, reps)
        ours = ms["fused"]
        ref_out = fwd(fns["fused"]).float()
        for base in ("eager matmul/softmax", "sdpa on reshaped chunks"):
            err = (fwd(fns[base]).float() - ref_out).abs().max().item()
            rows.append({"name": f"{label} {mode}", "shape": shape, "time_ms": ours, "baseline": base,
                         "baseline_ms": ms[base], "ratio": ms[base] / ours, "gb_s": nbytes / ours / 1e6,
                         "tflops": fl / ours / 1e9, "max_err": err})
    return rows


def run(device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    cfg = {**DEFAULTS, **(QUICK if quick else {})}
    cfg.update({k: v for k, v in overrides.items() if k in DEFAULTS and v is not None})
    name = cfg["dtype"] or ("bfloat16" if device == "cuda" else "float32")
    dtype = getattr(torch, str(name).removeprefix("torch."))
    dims = (cfg["D"],) if overrides.get("D") else cfg["head_dims"]
    rows = []
    for D in dims:
        rows += _bench_one(cfg, D, device, dtype)
    return rows
