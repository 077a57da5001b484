"""Building blocks shared by the decoder and the encoder: norms, MLPs, attention (self and cross)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyretro.model import _ops


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (as Llama does)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


class MLP(nn.Module):
    """SwiGLU (``down(silu(gate(x)) * up(x))``) or GELU (``down(gelu(up(x)))``)."""

    def __init__(self, dim: int, hidden: int, kind: str, bias: bool, dropout: float) -> None:
        super().__init__()
        self.kind = kind
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.gate = nn.Linear(dim, hidden, bias=bias) if kind == "swiglu" else None
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            h = F.silu(self.gate(x)) * self.up(x)
        else:
            h = F.gelu(self.up(x), approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.drop(self.down(h))


class Attention(nn.Module):
    """Multi-head attention with grouped-query heads and optional rotary, on SDPA.

    Self-attention when ``context`` is None (q, k, v from ``x``); cross-attention otherwise (k, v from
    ``context``, whose width may differ). ``kv_cache`` (a :class:`KVSlot`) turns on incremental decoding.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        bias: bool = False,
        context_dim: int | None = None,
        rotary_dim: int = 0,
        rotary_theta: float = 10000.0,
        rotary_interleaved: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.rotary_dim, self.rotary_theta, self.rotary_interleaved = rotary_dim, rotary_theta, rotary_interleaved
        self.cross = context_dim is not None
        if self.cross:
            self.q = nn.Linear(dim, n_heads * head_dim, bias=bias)
            self.kv = nn.Linear(context_dim, 2 * n_kv_heads * head_dim, bias=bias)
        else:  # one fused projection: a single matmul is faster than three
            self.qkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * head_dim, bias=bias)
        self.o = nn.Linear(n_heads * head_dim, dim, bias=bias)
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def _rope(self, x: Tensor, positions: Tensor | None) -> Tensor:
        if self.rotary_dim == 0 or positions is None:
            return x
        return _ops.rope(x, positions, theta=self.rotary_theta, rotary_dim=self.rotary_dim,
                         interleaved=self.rotary_interleaved)

    def forward(
        self,
        x: Tensor,
        *,
        positions: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
        context: Tensor | None = None,
        kv_cache: KVSlot | None = None,
    ) -> Tensor:
        """x ``[B, S, dim]``; ``attn_mask`` bool, broadcastable to ``[B, H, S, T]`` (True = attend)."""
        B, S, _ = x.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.cross:
            q = self.q(x).view(B, S, H, D)
            k, v = self.kv(context).view(B, context.shape[1], 2, G, D).unbind(2)
        else:
            q, k, v = self.qkv(x).view(B, S, H + 2 * G, D).split([H, G, G], dim=2)
            q, k = self._rope(q, positions), self._rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=G != H,
        )
        return self.drop(self.o(y.transpose(1, 2).reshape(B, S, H * D)))


class KVSlot:
    """One layer's key/value cache: preallocated ``[B, T_max, G, D]``, filled up to ``length``."""

    def __init__(self, batch: int, max_len: int, n_kv_heads: int, head_dim: int, dtype, device) -> None:
        self.k = torch.zeros(batch, max_len, n_kv_heads, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        s = k.shape[1]
        end = self.length + s
        if end > self.k.shape[1]:
            raise ValueError(f"KV cache overflow: {end} tokens > capacity {self.k.shape[1]}")
        self.k[:, self.length:end] = k
        self.v[:, self.length:end] = v
        self.length = end
        return self.k[:, :end], self.v[:, :end]
