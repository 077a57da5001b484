"""The decoder's chunked cross-attention (CCA) block: queries from the decoder, keys/values from the
encoded neighbours, Retro's chunk alignment done by ``pyretro.ops.chunked_cross_attention``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyretro.model import _ops
from pyretro.model.config import GPTConfig
from pyretro.model.layers import RMSNorm, make_norm


class ChunkedCrossAttention(nn.Module):
    """``x + gate * o(CCA(q(norm(x)), kv(E)))``. ``o`` starts at zero: a retro-fitted model starts as its GPT."""

    def __init__(self, gpt: GPTConfig, d_enc: int, chunk_len: int, rotary: bool, kv_heads: int | None = None,
                 qk_norm: bool = False, position_bias: float | None = None, neighbor_len: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.head_dim = gpt.n_heads, gpt.dim_head
        self.n_kv_heads = gpt.n_heads if kv_heads is None else kv_heads  # < n_heads: grouped-query CCA
        self.chunk_len, self.rotary, self.theta = chunk_len, rotary, gpt.rotary_theta
        hd = self.n_heads * self.head_dim
        self.norm = make_norm(gpt.norm, gpt.d_model, gpt.norm_eps)
        self.q = nn.Linear(gpt.d_model, hd, bias=gpt.bias)
        self.kv = nn.Linear(d_enc, 2 * self.n_kv_heads * self.head_dim, bias=gpt.bias)
        self.o = nn.Linear(hd, gpt.d_model, bias=gpt.bias)
        # per-head RMSNorm of queries and keys (RetroConfig.cca_qk_norm); None = off
        self.q_norm = RMSNorm(self.head_dim, gpt.norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, gpt.norm_eps) if qk_norm else None
        # learned score offset per (head, query index in its chunk, neighbour position); None = off
        self.position_bias_init = position_bias
        r = 2 * chunk_len if neighbor_len is None else neighbor_len
        self.pos_bias = nn.Parameter(torch.zeros(self.n_heads, chunk_len, r)) if position_bias is not None else None
        self.drop = nn.Dropout(gpt.dropout)
        self.zero_output()
        self.reset_position_bias()

    def zero_output(self) -> None:
        nn.init.zeros_(self.o.weight)
        if self.o.bias is not None:
            nn.init.zeros_(self.o.bias)

    def reset_position_bias(self) -> None:
        """``position_bias_init`` where the neighbour position is ``chunk_len + i`` for query index ``i`` (the
        token after query ``i`` in a neighbour aligned with the text), 0 elsewhere."""
        if self.pos_bias is None:
            return
        with torch.no_grad():
            self.pos_bias.zero_()
            i = torch.arange(self.chunk_len)
            i = i[self.chunk_len + i < self.pos_bias.shape[2]]
            self.pos_bias[:, i, self.chunk_len + i] = float(self.position_bias_init)

    def keys_values(self, encoded: Tensor) -> tuple[Tensor, Tensor]:
        """encoded ``[..., K, r, d_enc]`` -> k, v ``[..., K, r, G, D]`` (G = ``n_kv_heads``)."""
        # unbind: its backward is one stack, where two selects would each zero-fill and copy a full-size grad
        k, v = self.kv(encoded).unflatten(-1, (2, self.n_kv_heads, self.head_dim)).unbind(-3)
        if self.k_norm is not None:
            k = self.k_norm(k)
        return k, v

    def forward(self, h: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:
        """h ``[B, N, d]`` (already normed, real-position layout), k/v ``[B, L, K, r, G, D]``,
        key_mask ``[B, L, K, r]`` -> ``[B, N, d]`` (before the gate)."""
        B, N, _ = h.shape
        q = self.q(h).view(B, N, self.n_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        y = _ops.cca(q, k, v, key_mask, self.chunk_len, rotary=self.rotary, rope_theta=self.theta, bias=self.pos_bias)
        return self.drop(self.o(y.reshape(B, N, -1)))

    def attend_cached(self, h: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, q_pos: Tensor, r: int) -> Tensor:
        """One decode step with cached keys/values; the same math as the op. h ``[B, 1, d]`` (normed);
        k/v ``[B, K*r, G, D]`` of the chunk each row attends; key_mask ``[B, K*r]`` (all False where a row
        attends no chunk yet); q_pos ``[B]`` the query's index within its attending chunk (for rotary)."""
        from pyretro.ops.reference.cca import rope_neox

        B = h.shape[0]
        q = self.q(h).view(B, self.n_heads, self.head_dim)
        if self.q_norm is not None:
            q = self.q_norm(q)
        q, k, v = q.transpose(0, 1), k.transpose(1, 2), v.transpose(1, 2)  # q [H, B, D], k/v [B, H, KR, D]
        if self.rotary:
            q = rope_neox(q, q_pos, self.theta)  # positions run along dim -2 = the batch rows here
            k = rope_neox(k, torch.arange(r, device=k.device).repeat(k.shape[2] // r), self.theta)
        any_valid = key_mask.any(dim=1)
        m = key_mask | ~any_valid[:, None]  # keep softmax finite on empty rows; zeroed below
        mask = m[:, None, None, :]
        if self.pos_bias is not None:  # the row of each query's index, repeated over the K neighbours
            b = self.pos_bias[:, q_pos.clamp(0, self.chunk_len - 1)].transpose(0, 1)  # [B, H, r]
            b = b.repeat(1, 1, k.shape[2] // r)[:, :, None, :].to(q.dtype)
            mask = torch.where(mask, b, torch.finfo(q.dtype).min)
        y = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1)[:, :, None], k, v, attn_mask=mask,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # [B, H, 1, D]
        y = y * any_valid[:, None, None, None].to(y.dtype)
        return self.o(y.reshape(B, 1, -1))
