"""Fused chunked cross-attention (Retro's CCA) as a torch op: ``pyretro.ops.chunked_cross_attention``.

The fused kernels are registered in ``pyretro.ops._cca_lib`` (torch.library ops ``pyretro::cca_fwd`` /
``pyretro::cca_bwd``); this module validates the arguments and dispatches. Semantics: docs/ops_cca.md and
``pyretro.ops.reference.cca``.
"""

from __future__ import annotations

import math
import numbers

import torch

from pyretro.ops import _cca_lib
from pyretro.ops.reference.cca import chunked_cross_attention_ref

MAX_HEAD_DIM = 128
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _validate(q, k, v, key_mask, chunk_len, scale, rotary, rope_theta) -> float:
    """Checks every argument (raising ValueError/TypeError naming it); returns the effective scale."""
    for name, t in (("q", q), ("k", k), ("v", v), ("key_mask", key_mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"chunked_cross_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, numbers.Integral):
        raise TypeError(f"chunked_cross_attention: chunk_len must be an int, got {type(chunk_len).__name__}")
    if chunk_len <= 0:
        raise ValueError(f"chunked_cross_attention: chunk_len must be > 0, got {chunk_len}")
    if q.dim() != 4:
        raise ValueError(f"chunked_cross_attention: q must be [B, N, H, D], got shape {list(q.shape)}")
    if k.dim() != 6:
        raise ValueError(f"chunked_cross_attention: k must be [B, L, K, R, H, D], got shape {list(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"chunked_cross_attention: v shape {list(v.shape)} != k shape {list(k.shape)}")
    B, N, H, D = q.shape
    L = -(-N // chunk_len)
    G = k.shape[4]
    if tuple(k.shape[:2]) != (B, L) or k.shape[5] != D or not (G == H or (G > 0 and H % G == 0)):
        raise ValueError(
            f"chunked_cross_attention: k/v shape {list(k.shape)} does not match q {list(q.shape)}: expected "
            f"[B={B}, L=ceil(N/chunk_len)={L}, K, R, G, D={D}] with G key/value heads dividing H={H}"
        )
    if key_mask.dtype != torch.bool:
        raise TypeError(f"chunked_cross_attention: key_mask must be torch.bool (True = valid), got {key_mask.dtype}")
    if tuple(key_mask.shape) != tuple(k.shape[:4]):
        raise ValueError(
            f"chunked_cross_attention: key_mask shape {list(key_mask.shape)} != [B, L, K, R] = {list(k.shape[:4])}"
        )
    if q.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"chunked_cross_attention: q dtype {q.dtype} not supported (float32/64, bfloat16, float16)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(
            f"chunked_cross_attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    devs = {t.device for t in (q, k, v, key_mask)}
    if len(devs) != 1:
        raise ValueError(f"chunked_cross_attention: q, k, v, key_mask must be on one device, got {sorted(map(str, devs))}")
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"chunked_cross_attention: device {q.device} not supported (cpu or cuda)")
    if q.dtype == torch.float64 and q.device.type == "cuda":
        raise TypeError("chunked_cross_attention: float64 is supported on CPU only")
    if D > MAX_HEAD_DIM:
        raise ValueError(f"chunked_cross_attention: head dim D={D} > {MAX_HEAD_DIM} is not supported")
    if D == 0:
        raise ValueError("chunked_cross_attention: head dim D must be > 0")
    if rotary and D % 2:
        raise ValueError(f"chunked_cross_attention: rotary=True needs an even head dim, got D={D}")
    if not isinstance(rotary, bool):
        raise TypeError(f"chunked_cross_attention: rotary must be a bool, got {type(rotary).__name__}")
    theta = float(rope_theta)
    if not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"chunked_cross_attention: rope_theta must be finite and > 0, got {rope_theta}")
    s = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if not math.isfinite(s):
        raise ValueError(f"chunked_cross_attention: scale must be finite, got {scale}")
    return s


def _validate_bias(bias, q, k, chunk_len) -> None:
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"chunked_cross_attention: bias must be a torch.Tensor or None, got {type(bias).__name__}")
    want = (q.shape[2], chunk_len, k.shape[3])
    if tuple(bias.shape) != want:
        raise ValueError(f"chunked_cross_attention: bias shape {list(bias.shape)} != [H, chunk_len, R] = {list(want)}")
    if bias.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"chunked_cross_attention: bias dtype {bias.dtype} not supported (a float dtype)")
    if bias.device != q.device:
        raise ValueError(f"chunked_cross_attention: bias is on {bias.device}, q on {q.device}")


def _autocast(q, k, v):
    """Under autocast, q/k/v go to the autocast dtype (as for a matmul), so mixed inputs are fine there."""
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (q, k, v)):
        return q, k, v
    dev = q.device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        q, k, v = (t.to(dt) for t in (q, k, v))
    return q, k, v


def chunked_cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    chunk_len: int,
    *,
    scale: float | None = None,
    rotary: bool = False,
    rope_theta: float = 10000.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Retro chunked cross-attention, fused (forward and backward).

    Args:
        q: ``[B, N, H, D]`` queries of every decoder token.
        k, v: ``[B, L, K, R, G, D]`` keys/values of the encoded neighbours; ``L = ceil(N / chunk_len)``
            chunks, ``K`` neighbours of ``R`` tokens each, ``G`` key/value heads (``G == H``, or grouped-query
            attention: ``H % G == 0`` and query head ``h`` reads kv head ``h // (H // G)``).
        key_mask: ``[B, L, K, R]`` bool, True = valid key (missing neighbours / padding are False).
        chunk_len: Retro chunk length (64 in the papers).
        scale: softmax scale, default ``1 / sqrt(D)``.
        rotary: apply GPT-NeoX (half-split) rotary embeddings on the full head dim inside the op; query
            position = index within its attending chunk (0..chunk_len-1), key position = index within its
            neighbour (0..R-1).
        rope_theta: rotary base.
        bias: optional learned position bias ``[H, chunk_len, R]`` (differentiable), added to the scaled score
            of query row ``i`` of an attending chunk (0..chunk_len-1) and the key at position ``r`` of every
            neighbour. The kernels read it as float32 (float64 for float64 inputs).

    Token ``t`` attends to the ``K*R`` keys of chunk ``u = (t - (chunk_len - 1)) // chunk_len`` when
    ``t >= chunk_len - 1``, only to valid keys: ``softmax(q.k * scale) . v``. Tokens ``t < chunk_len - 1``
    and tokens whose chunk has no valid key get exactly zero output and zero gradients (never NaN).
    Output ``[B, N, H, D]`` in q's dtype. Supported: float32/bfloat16/float16 (+ float64 on CPU), D <= 128.
    Under ``torch.autocast`` q/k/v are first cast to the autocast dtype. Full contract: docs/ops_cca.md.
    """
    q, k, v = _autocast(q, k, v)
    s = _validate(q, k, v, key_mask, chunk_len, scale, rotary, rope_theta)
    _validate_bias(bias, q, k, chunk_len)
    return _cca_lib.dispatch(q, k, v, key_mask, int(chunk_len), s, rotary, float(rope_theta), bias)


__all__ = ["chunked_cross_attention", "chunked_cross_attention_ref"]
