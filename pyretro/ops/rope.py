"""Rotary position embeddings (RoPE) as ``torch.library`` ops: ``rope``, ``rope_`` (in place), ``rope_qk``.

Semantics (exactly those of :func:`pyretro.ops.reference.rope.rope_reference`):

- ``x [..., S, H, D]`` floating (float16, bfloat16, float32, float64); ``positions`` integer, shape ``[S]``
  (shared by every leading index) or ``x.shape[:-2]`` (e.g. ``[B, S]``), same device as ``x``.
- ``rotary_dim = R`` (default ``D``), even, ``0 < R <= D``: only the first ``R`` dims of each head rotate,
  the rest pass through (InstructRetro's GPT uses ``R = D/2``).
- Pair ``i < R/2`` rotates by ``angle = p * theta ** (-2i/R)``; the pair is ``(i, i + R/2)`` (GPT-NeoX,
  ``interleaved=False``) or ``(2i, 2i+1)`` (GPT-J, ``interleaved=True``):
  ``out_a = x_a cos - x_b sin``, ``out_b = x_b cos + x_a sin``.
- Angles are computed in the kernel (no cos/sin table): formed and reduced mod 2*pi in float64, then
  sin/cos and the rotation in float32 (float64 for float64 inputs), one rounding to ``x.dtype`` at the end.
  Reducing in float64 keeps large positions (e.g. 100000) accurate, unlike an fp32 ``outer(pos, inv_freq)``.
- The gradient is the inverse rotation (``-angle``); it is exact, so higher derivatives work too.
- Outputs of ``rope``/``rope_qk`` are new contiguous tensors. Inputs may be strided (e.g. ``q`` sliced out of
  a fused ``qkv`` projection) as long as the last dim is contiguous; otherwise they are copied first.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyretro._tensor import cuda_stream, view
from pyretro.ops._device import cuda_kernels_missing
from pyretro.ops.reference.rope import rope_reference

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _kernel(x: Tensor):
    """The compiled entry point for ``x``'s device, or None when the core lacks it (a core built before the
    kernels, or a CPU-only build given CUDA tensors): then the plain-PyTorch reference runs instead."""
    from pyretro._ext import _C, cuda_compiled, sync_threads

    sync_threads()
    fn = getattr(_C, "rope", None)
    if fn is not None and x.is_cuda and not cuda_compiled():
        _warn_no_cuda()
        return None
    return fn


def _warn_no_cuda() -> None:  # one policy for every op (warn once / PYRETRO_CUDA_FALLBACK): ops/_device.py
    cuda_kernels_missing("rope")


# --- argument checks (run before any kernel; each error names the argument) -------------------------------
def _check_x(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: dtype must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() < 3:
        raise ValueError(f"{name}: expected shape [..., S, H, D] (at least 3 dims), got {list(x.shape)}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: device {x.device} is not supported (cpu or cuda)")
    return x


def _check_rotary_dim(rotary_dim: int | None, d: int) -> int:
    if rotary_dim is None:
        r = d
    else:
        if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int):
            raise TypeError(f"rotary_dim: expected an int or None, got {type(rotary_dim).__name__}")
        r = rotary_dim
    if r <= 0 or r > d:
        raise ValueError(f"rotary_dim: must be in (0, D={d}], got {r}")
    if r % 2:
        raise ValueError(f"rotary_dim: must be even, got {r}")
    return r


def _check_theta(theta: float) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)):
        raise TypeError(f"theta: expected a number, got {type(theta).__name__}")
    if not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"theta: must be finite and > 0, got {theta}")
    return float(theta)


def _check_positions(positions: object, x: Tensor, name: str) -> Tensor:
    if not isinstance(positions, Tensor):
        raise TypeError(f"positions: expected an integer torch.Tensor, got {type(positions).__name__}")
    if positions.dtype not in _INT_DTYPES:
        raise TypeError(f"positions: dtype must be an integer type, got {positions.dtype}")
    if positions.device != x.device:
        raise ValueError(f"positions: on {positions.device} but {name} is on {x.device}")
    s = x.shape[-3]
    if tuple(positions.shape) not in ((s,), tuple(x.shape[:-2])):
        raise ValueError(
            f"positions: shape must be [S]={[s]} or {name}.shape[:-2]={list(x.shape[:-2])}, "
            f"got {list(positions.shape)}"
        )
    if positions.dtype not in (torch.int32, torch.int64):
        positions = positions.to(torch.int64)
    return positions


def _prepare(x: Tensor, positions: Tensor, theta: float, rotary_dim: int | None, name: str = "x"):
    x = _check_x(x, name)
    r = _check_rotary_dim(rotary_dim, x.shape[-1])
    return _check_positions(positions, x, name), _check_theta(theta), r


# --- kernel launch ----------------------------------------------------------------------------------------
def _as4d(t: Tensor) -> Tensor | None:
    """``t`` as a [B, S, H, D] view with a unit-stride last dim, or None when no such view exists."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        return None
    if t.dim() == 3:
        return t.unsqueeze(0)
    if t.dim() == 4:
        return t
    try:
        return t.view(-1, *t.shape[-3:])
    except RuntimeError:
        return None


def _pos2d(positions: Tensor, x4: Tensor) -> Tensor:
    p = positions.contiguous()
    return p.unsqueeze(0) if p.dim() == 1 else p.view(x4.shape[0], x4.shape[1])


def _launch(
    xs: list[Tensor], outs: list[Tensor], positions: Tensor, theta: float, r: int, interleaved: bool, inverse: bool
) -> None:
    """Rotates each ``xs[j]`` into ``outs[j]`` (which may be ``xs[j]`` itself) in one kernel call."""
    if any(x.numel() == 0 for x in xs):  # e.g. S == 0, or k with no heads: rotate the non-empty ones
        for x, o in zip(xs, outs, strict=True):
            if x.numel():
                _launch([x], [o], positions, theta, r, interleaved, inverse)
        return
    fn = _kernel(xs[0])
    if fn is None:  # no compiled kernel for this device: same semantics, plain PyTorch
        for x, o in zip(xs, outs, strict=True):
            o.copy_(rope_reference(x, positions, theta=theta, rotary_dim=r, interleaved=interleaved, inverse=inverse))
        return
    xs4 = [_as4d(x) for x in xs]
    xs4 = [x4 if x4 is not None else _as4d(x.contiguous()) for x, x4 in zip(xs, xs4, strict=True)]
    outs4 = [_as4d(o) for o in outs]
    staged = [o4 is None for o4 in outs4]
    outs4 = [torch.empty_like(x4, memory_format=torch.contiguous_format) if s else o4
             for x4, o4, s in zip(xs4, outs4, staged, strict=True)]
    fn(
        [view(x, "x") for x in xs4],
        [view(o, "out") for o in outs4],
        view(_pos2d(positions, xs4[0]), "positions"),
        theta,
        r,
        interleaved,
        inverse,
        cuda_stream(xs[0]),
    )
    for o, o4, s in zip(outs, outs4, staged, strict=True):
        if s:
            o.copy_(o4.view(o.shape))


# --- torch.library ops ------------------------------------------------------------------------------------
@torch.library.custom_op("pyretro::rope", mutates_args=())
def _rope_op(x: Tensor, positions: Tensor, theta: float, rotary_dim: int, interleaved: bool, inverse: bool) -> Tensor:
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch([x], [out], positions, theta, rotary_dim, interleaved, inverse)
    return out


@_rope_op.register_fake
def _(x, positions, theta, rotary_dim, interleaved, inverse):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def _rope_setup(ctx, inputs, output):
    _, positions, theta, rotary_dim, interleaved, inverse = inputs
    ctx.save_for_backward(positions)
    ctx.args = (theta, rotary_dim, interleaved, inverse)


def _rope_backward(ctx, grad):
    (positions,) = ctx.saved_tensors
    theta, rotary_dim, interleaved, inverse = ctx.args
    return _rope_op(grad, positions, theta, rotary_dim, interleaved, not inverse), None, None, None, None, None


_rope_op.register_autograd(_rope_backward, setup_context=_rope_setup)


@torch.library.custom_op("pyretro::rope_qk", mutates_args=())
def _rope_qk_op(
    q: Tensor, k: Tensor, positions: Tensor, theta: float, rotary_dim: int, interleaved: bool, inverse: bool
) -> tuple[Tensor, Tensor]:
    oq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    ok = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    _launch([q, k], [oq, ok], positions, theta, rotary_dim, interleaved, inverse)
    return oq, ok


@_rope_qk_op.register_fake
def _(q, k, positions, theta, rotary_dim, interleaved, inverse):
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device), torch.empty(k.shape, dtype=k.dtype, device=k.device))


def _rope_qk_setup(ctx, inputs, output):
    _, _, positions, theta, rotary_dim, interleaved, inverse = inputs
    ctx.save_for_backward(positions)
    ctx.args = (theta, rotary_dim, interleaved, inverse)


def _rope_qk_backward(ctx, gq, gk):
    (positions,) = ctx.saved_tensors
    theta, rotary_dim, interleaved, inverse = ctx.args
    dq, dk = _rope_qk_op(gq, gk, positions, theta, rotary_dim, interleaved, not inverse)
    return dq, dk, None, None, None, None, None


_rope_qk_op.register_autograd(_rope_qk_backward, setup_context=_rope_qk_setup)


@torch.library.custom_op("pyretro::rope_", mutates_args=("x",))
def _rope_inplace_op(
    x: Tensor, positions: Tensor, theta: float, rotary_dim: int, interleaved: bool, inverse: bool
) -> None:
    _launch([x], [x], positions, theta, rotary_dim, interleaved, inverse)


@_rope_inplace_op.register_fake
def _(x, positions, theta, rotary_dim, interleaved, inverse):
    return None


@torch.library.custom_op("pyretro::rope_qk_", mutates_args=("q", "k"))
def _rope_qk_inplace_op(
    q: Tensor, k: Tensor, positions: Tensor, theta: float, rotary_dim: int, interleaved: bool, inverse: bool
) -> None:
    _launch([q, k], [q, k], positions, theta, rotary_dim, interleaved, inverse)


@_rope_qk_inplace_op.register_fake
def _(q, k, positions, theta, rotary_dim, interleaved, inverse):
    return None


# --- public API -------------------------------------------------------------------------------------------
def rope(
    x: Tensor,
    positions: Tensor,
    *,
    theta: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
) -> Tensor:
    """Rotary position embedding of ``x [..., S, H, D]`` at integer ``positions`` (``[S]`` or ``x.shape[:-2]``).

    Returns a new tensor; differentiable (the gradient is the inverse rotation). See the module docstring
    for the exact semantics and precision.
    """
    positions, theta, r = _prepare(x, positions, theta, rotary_dim)
    return _rope_op(x, positions, theta, r, bool(interleaved), False)


def rope_(
    x: Tensor,
    positions: Tensor,
    *,
    theta: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
) -> Tensor:
    """In-place :func:`rope`; returns ``x``. When autograd records ``x``, it falls back to ``x.copy_(rope(x))``."""
    positions, theta, r = _prepare(x, positions, theta, rotary_dim)
    if torch.is_grad_enabled() and x.requires_grad:
        return x.copy_(_rope_op(x, positions, theta, r, bool(interleaved), False))
    _rope_inplace_op(x, positions, theta, r, bool(interleaved), False)
    return x


def _prepare_qk(q: Tensor, k: Tensor, positions: Tensor, theta: float, rotary_dim: int | None):
    positions, theta, r = _prepare(q, positions, theta, rotary_dim, "q")
    _check_x(k, "k")
    if k.dtype != q.dtype:
        raise TypeError(f"k: dtype {k.dtype} differs from q's {q.dtype}")
    if k.device != q.device:
        raise ValueError(f"k: on {k.device} but q is on {q.device}")
    if k.dim() != q.dim() or k.shape[:-2] != q.shape[:-2] or k.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"k: shape {list(k.shape)} must match q's {list(q.shape)} except in the head count (dim -2)"
        )
    return positions, theta, r


def rope_qk(
    q: Tensor,
    k: Tensor,
    positions: Tensor,
    *,
    theta: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
) -> tuple[Tensor, Tensor]:
    """:func:`rope` of queries and keys in one kernel call (sin/cos computed once for both).

    ``q [..., S, Hq, D]`` and ``k [..., S, Hk, D]`` share dtype, device, leading dims and ``D``; the head
    counts may differ (grouped-query attention). Returns ``(q', k')``; differentiable.
    """
    positions, theta, r = _prepare_qk(q, k, positions, theta, rotary_dim)
    return _rope_qk_op(q, k, positions, theta, r, bool(interleaved), False)


def rope_qk_(
    q: Tensor,
    k: Tensor,
    positions: Tensor,
    *,
    theta: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
) -> tuple[Tensor, Tensor]:
    """In-place :func:`rope_qk`; returns ``(q, k)``. Falls back to copies when autograd records q or k."""
    positions, theta, r = _prepare_qk(q, k, positions, theta, rotary_dim)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        oq, ok = _rope_qk_op(q, k, positions, theta, r, bool(interleaved), False)
        return q.copy_(oq), k.copy_(ok)
    _rope_qk_inplace_op(q, k, positions, theta, r, bool(interleaved), False)
    return q, k


__all__ = ["rope", "rope_", "rope_qk", "rope_qk_"]
