"""torch.library registration of the fused CCA kernels: ``pyretro::cca_fwd`` and ``pyretro::cca_bwd``.

``cca_fwd(q, k, v, key_mask, chunk_len, scale, rotary, rope_theta, bias=None) -> (out, lse)`` and
``cca_bwd(grad_out, q, k, v, key_mask, out, lse, chunk_len, scale, rotary, rope_theta, bias=None)
-> (dq, dk, dv, dbias)`` take contiguous tensors (the public wrapper validates and makes them contiguous).
``lse`` ([B, N, H], float32, float64 for float64 inputs) is the per-row log-sum-exp saved for backward (+inf
on rows that attend to nothing) and is not differentiable. ``bias`` is the optional position bias [H, C, R] in
that same float type; ``dbias`` its gradient (an empty tensor without a bias). Both ops have fake kernels
(torch.compile) and cca_fwd has autograd.
"""

from __future__ import annotations

import os

import torch

from pyretro._tensor import cuda_stream, view
from pyretro.ops._device import cuda_kernels_missing
from pyretro.ops.reference.cca import chunked_cross_attention_ref, expand_kv_heads

CUDA_HEAD_DIMS = (32, 64, 80, 96, 128)
_VARIANTS = {"portable": 0, "tc": 1}


try:
    from pyretro._ext import _C as _CORE
except ImportError:  # no compiled core: the reference runs (same semantics, slower)
    _CORE = None
_HAS_FUSED = _CORE is not None and hasattr(_CORE, "cca_fwd")
_CUDA_COMPILED = _HAS_FUSED and bool(_CORE.build_info()["cuda_compiled"])


def _C():
    if _CORE is None:
        raise ImportError("pyretro's compiled core is missing (run tools/dev_build.sh or pip install .)")
    from pyretro._ext import sync_threads

    sync_threads()
    return _CORE


def cuda_variant() -> int:
    """CUDA kernel variant from ``PYRETRO_CCA_CUDA_VARIANT``: ``portable`` (default) or ``tc`` (experimental
    tensor-core forward for bf16/fp16, opt-in until validated on a GPU; backward stays portable)."""
    name = os.environ.get("PYRETRO_CCA_CUDA_VARIANT", "portable")
    if name not in _VARIANTS:
        raise ValueError(f"PYRETRO_CCA_CUDA_VARIANT must be one of {sorted(_VARIANTS)}, got {name!r}")
    return _VARIANTS[name]


def _lse_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.custom_op("pyretro::cca_fwd", mutates_args=())
def cca_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
    chunk_len: int, scale: float, rotary: bool, rope_theta: float, bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v, key_mask = (t.contiguous() for t in (q, k, v, key_mask))
    if q.numel() == 0 or k.numel() == 0:  # nothing to attend to (empty views may have any strides)
        return torch.zeros_like(q), torch.full(q.shape[:3], float("inf"), dtype=_lse_dtype(q), device=q.device)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=_lse_dtype(q), device=q.device)
    _C().cca_fwd(
        view(q, "q"), view(k, "k"), view(v, "v"), view(key_mask, "key_mask"), view(out, "out"), view(lse, "lse"),
        chunk_len, scale, rotary, rope_theta, cuda_stream(q), cuda_variant(),
        None if bias is None else view(bias.contiguous(), "bias"),
    )
    return out, lse


@cca_fwd.register_fake
def _(q, k, v, key_mask, chunk_len, scale, rotary, rope_theta, bias=None):
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(q.shape[:3], dtype=_lse_dtype(q))


@torch.library.custom_op("pyretro::cca_bwd", mutates_args=())
def cca_bwd(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
    out: torch.Tensor, lse: torch.Tensor, chunk_len: int, scale: float, rotary: bool, rope_theta: float,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_out, q, k, v, key_mask, out, lse = (t.contiguous() for t in (grad_out, q, k, v, key_mask, out, lse))
    grad_out = grad_out.to(q.dtype)
    dbias = _dbias_like(bias)
    if q.numel() == 0 or k.numel() == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), dbias
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    _C().cca_bwd(
        view(grad_out, "grad_out"), view(q, "q"), view(k, "k"), view(v, "v"), view(key_mask, "key_mask"),
        view(out, "out"), view(lse, "lse"), view(dq, "dq"), view(dk, "dk"), view(dv, "dv"),
        chunk_len, scale, rotary, rope_theta, cuda_stream(q), cuda_variant(),
        None if bias is None else view(bias.contiguous(), "bias"), None if bias is None else view(dbias, "dbias"),
    )
    return dq, dk, dv, dbias


def _dbias_like(bias: torch.Tensor | None) -> torch.Tensor:
    """Zero-filled gradient buffer of the position bias (the CUDA kernel accumulates with atomics);
    an empty tensor without a bias (custom ops cannot return None)."""
    if bias is None:
        return torch.empty(0)
    return torch.zeros(bias.shape, dtype=bias.dtype, device=bias.device)


@cca_bwd.register_fake
def _(grad_out, q, k, v, key_mask, out, lse, chunk_len, scale, rotary, rope_theta, bias=None):
    cf = torch.contiguous_format
    dbias = torch.empty(0) if bias is None else torch.empty_like(bias, memory_format=cf)
    return (torch.empty_like(q, memory_format=cf), torch.empty_like(k, memory_format=cf),
            torch.empty_like(v, memory_format=cf), dbias)


def _setup_context(ctx, inputs, output):
    q, k, v, key_mask, chunk_len, scale, rotary, rope_theta, bias = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, key_mask, out, lse, bias)
    ctx.args = (chunk_len, scale, rotary, rope_theta)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, key_mask, out, lse, bias = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv, dbias = cca_bwd(grad_out, q, k, v, key_mask, out, lse, *ctx.args, bias)
    return dq, dk, dv, None, None, None, None, None, (dbias if bias is not None else None)


cca_fwd.register_autograd(_backward, setup_context=_setup_context)


def fused_available(q: torch.Tensor) -> bool:
    """Whether the fused kernels handle this call (else the reference runs; same semantics)."""
    if q.device.type == "cuda":
        return _CUDA_COMPILED and q.shape[-1] in CUDA_HEAD_DIMS
    return _HAS_FUSED and q.device.type == "cpu"


def dispatch(q, k, v, key_mask, chunk_len: int, scale: float, rotary: bool, theta: float,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    if q.device.type == "cuda" and not _CUDA_COMPILED:  # CPU-only build: shared policy in ops/_device.py
        cuda_kernels_missing("chunked_cross_attention")
    if not fused_available(q):
        return chunked_cross_attention_ref(q, k, v, key_mask, chunk_len, scale=scale, rotary=rotary,
                                           rope_theta=theta, bias=bias)
    if q.device.type == "cuda" and k.shape[4] != q.shape[2]:
        # The CUDA kernels take one kv head per query head: expand the groups (autograd sums them back).
        k, v = expand_kv_heads(k, q.shape[2]), expand_kv_heads(v, q.shape[2])
    q, k, v, key_mask = (t.contiguous() for t in (q, k, v, key_mask))
    if bias is not None:  # the kernels read it in the compute type (autograd casts the gradient back)
        bias = bias.to(_lse_dtype(q)).contiguous()
    return cca_fwd(q, k, v, key_mask, chunk_len, scale, rotary, theta, bias)[0]
