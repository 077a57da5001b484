"""Plain-PyTorch chunked cross-attention (CCA): the semantics contract of ``pyretro.ops.chunked_cross_attention``.

Alignment (Retro): token ``t`` attends to the neighbours of chunk ``u = (t - (chunk_len - 1)) // chunk_len``
when ``t >= chunk_len - 1``, i.e. attending chunk ``u`` covers the last token of chunk ``u`` and the first
``chunk_len - 1`` tokens of chunk ``u + 1``. Tokens before that, and tokens whose chunk has no valid key,
get exactly zero output and zero gradients.

This is also the eager baseline of the benchmark: shift, pad, reshape, matmul, masked softmax, matmul.
"""

from __future__ import annotations

import math

import torch


def rope_neox(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """GPT-NeoX (half-split) rotary on the full last dim of ``x`` (``[..., P, D]`` with P positions on dim -2).

    ``out[:D/2] = x1 cos - x2 sin``, ``out[D/2:] = x2 cos + x1 sin`` with ``x1 = x[:D/2]``, ``x2 = x[D/2:]``,
    angle ``= pos * theta ** (-2 i / D)`` for ``i < D/2``. Angles in float32 (float64 for float64 ``x``).
    """
    d = x.shape[-1]
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = theta ** (-torch.arange(0, d // 2, device=x.device, dtype=cdt) * 2.0 / d)
    ang = positions.to(cdt)[:, None] * inv_freq[None, :]  # [P, D/2]
    cos, sin = ang.cos(), ang.sin()
    xf = x.to(cdt)
    x1, x2 = xf[..., : d // 2], xf[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def expand_kv_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[..., G, D]`` -> ``[..., n_heads, D]``: kv head ``g`` serves query heads ``g*H/G .. (g+1)*H/G - 1``
    (grouped-query attention). A broadcast view, materialized by the final reshape."""
    G = x.shape[-2]
    if G == n_heads:
        return x
    return x.unsqueeze(-2).expand(*x.shape[:-1], n_heads // G, x.shape[-1]).reshape(*x.shape[:-2], n_heads, x.shape[-1])


def chunked_cross_attention_ref(
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
    """Reference CCA. q ``[B, N, H, D]``, k/v ``[B, L, K, R, G, D]`` (``G`` kv heads, ``H % G == 0``;
    grouped-query attention when ``G < H``), key_mask ``[B, L, K, R]`` bool (True = valid),
    ``L = ceil(N / chunk_len)``. Returns ``[B, N, H, D]`` in q's dtype.

    ``bias`` ``[H, chunk_len, R]`` (optional position bias): added to the scaled score of query row ``i`` of
    an attending chunk (``0..chunk_len-1``) and the key at position ``r`` of every neighbour.

    Computed in the inputs' dtype (so it doubles as the "same-dtype PyTorch" baseline of the tests);
    differentiable with plain autograd. No input validation: see ``pyretro.ops.chunked_cross_attention``.
    """
    B, N, H, D = q.shape
    k, v = expand_kv_heads(k, H), expand_kv_heads(v, H)
    L, K, R = k.shape[1], k.shape[2], k.shape[3]
    C = chunk_len
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    out = q.new_zeros(B, N, H, D)
    n_att = N - (C - 1)  # tokens that attend (t >= C - 1)
    if n_att <= 0 or B == 0 or H == 0:
        return out + 0 * q.sum()  # keep the graph connected: zero grads, not None
    # Shift by C-1 and pad to whole chunks: qs[b, u, i] is token u*C + C-1 + i.
    qs = torch.nn.functional.pad(q[:, C - 1 :], (0, 0, 0, 0, 0, L * C - n_att))
    qs = qs.reshape(B, L, C, H, D).permute(0, 1, 3, 2, 4)  # [B, L, H, C, D]
    ks = k.permute(0, 1, 4, 2, 3, 5).reshape(B, L, H, K * R, D)  # [B, L, H, KR, D]
    vs = v.permute(0, 1, 4, 2, 3, 5).reshape(B, L, H, K * R, D)
    if rotary:
        qs = rope_neox(qs, torch.arange(C, device=q.device), rope_theta)
        kpos = torch.arange(R, device=q.device).repeat(K)  # key (k, r) sits at position r
        ks = rope_neox(ks, kpos, rope_theta)
    scores = torch.matmul(qs, ks.transpose(-1, -2)) * scale  # [B, L, H, C, KR]
    if bias is not None:
        scores = scores + bias.to(scores.dtype).repeat(1, 1, K)  # [H, C, R] -> [H, C, K*R], key (k, r) -> r
    mask = key_mask.reshape(B, L, 1, 1, K * R)
    any_valid = mask.any(dim=-1, keepdim=True)
    # -inf on invalid keys, but 0 on rows with no valid key so softmax stays finite; the mask multiply
    # then zeroes those rows (and their gradients) exactly.
    fill = torch.where(any_valid, float("-inf"), 0.0).to(scores.dtype)
    scores = torch.where(mask, scores, fill)
    p = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)
    o = torch.matmul(p, vs)  # [B, L, H, C, D]
    o = o.permute(0, 1, 3, 2, 4).reshape(B, L * C, H, D)[:, :n_att]
    return torch.cat([out[:, : C - 1], o], dim=1)
