"""Plain-PyTorch rotary position embedding: the semantics contract of ``pyretro.ops.rope``.

For head dimension ``D`` and ``rotary_dim = R`` (even, ``R <= D``), pair ``i`` in ``[0, R/2)`` is rotated by
``angle = p * theta ** (-2 i / R)`` where ``p`` is the token's position:

    out[a] = x[a] * cos(angle) - x[b] * sin(angle)
    out[b] = x[b] * cos(angle) + x[a] * sin(angle)

with ``(a, b) = (i, i + R/2)`` (GPT-NeoX half-split layout) or ``(2i, 2i + 1)`` (GPT-J interleaved layout).
Dimensions ``R..D-1`` pass through unchanged. ``inverse=True`` rotates by ``-angle`` (the backward pass).

Precision: the angle is formed in float64 and reduced to ``[-pi, pi]`` there (so it stays accurate for
large positions), then sin/cos and the rotation run in float32 (float64 for float64 ``x``); the result is
rounded to ``x``'s dtype once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rope_angles(positions: Tensor, rotary_dim: int, theta: float) -> Tensor:
    """float64 angles ``[..., R/2]`` reduced to ``[-pi, pi]`` for integer ``positions [...]``."""
    i = torch.arange(rotary_dim // 2, dtype=torch.float64, device=positions.device)
    inv_freq = torch.pow(torch.tensor(float(theta), dtype=torch.float64), -2.0 * i / rotary_dim)
    angle = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device)
    two_pi = 2.0 * math.pi
    return angle - two_pi * torch.round(angle / two_pi)


def rope_reference(
    x: Tensor,
    positions: Tensor,
    *,
    theta: float = 10000.0,
    rotary_dim: int | None = None,
    interleaved: bool = False,
    inverse: bool = False,
) -> Tensor:
    """Rotary embedding of ``x [..., S, H, D]`` at integer ``positions [S]`` or ``x.shape[:-2]``."""
    d = x.shape[-1]
    r = d if rotary_dim is None else int(rotary_dim)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    angle = rope_angles(positions, r, theta)  # [S, R/2] or [..., S, R/2]
    cos = torch.cos(angle.to(compute))[..., None, :]  # broadcast over heads
    sin = torch.sin(angle.to(compute))[..., None, :]
    if inverse:
        sin = -sin
    xc = x.to(compute)
    rot, rest = xc[..., :r], xc[..., r:]
    if interleaved:
        a, b = rot[..., 0::2], rot[..., 1::2]
    else:
        a, b = rot[..., : r // 2], rot[..., r // 2 :]
    oa = a * cos - b * sin
    ob = b * cos + a * sin
    if interleaved:
        out_rot = torch.stack((oa, ob), dim=-1).flatten(-2)
    else:
        out_rot = torch.cat((oa, ob), dim=-1)
    return torch.cat((out_rot, rest), dim=-1).to(x.dtype)


def rope_eager_baseline(x: Tensor, positions: Tensor, theta: float = 10000.0, rotary_dim: int | None = None) -> Tensor:
    """The usual eager PyTorch rope (HF ``rotate_half`` style, float32 cos/sin built per call).

    Used as the benchmark baseline; half-split layout, ``positions [S]``.
    """
    d = x.shape[-1]
    r = d if rotary_dim is None else rotary_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.float32, device=x.device) / r))
    freqs = torch.outer(positions.to(torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(x.dtype)[:, None, :]
    sin = emb.sin().to(x.dtype)[:, None, :]
    xr, xp = x[..., :r], x[..., r:]
    x1, x2 = xr[..., : r // 2], xr[..., r // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    out = xr * cos + rotated * sin
    return torch.cat((out, xp), dim=-1) if r < d else out
