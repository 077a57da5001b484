"""Retro's encoder: bidirectional layers over each neighbour's r tokens; the first layer also
cross-attends from the neighbour tokens to the decoder hidden states of the chunk that retrieved them.

One call encodes every neighbour of every chunk in the batch at once: neighbours are folded into the
batch dimension (``[B*L*K, r]`` for self-attention, ``[B*L, K*r]`` queries for the cross-attention).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyretro.model.config import GPTConfig, RetroConfig
from pyretro.model.layers import MLP, Attention, make_norm


def key_padding_mask(valid: Tensor) -> Tensor | None:
    """``valid [N, T]`` -> SDPA mask ``[N, 1, 1, T]``, or None when nothing is masked (eager mode).

    Rows with no valid key (a missing neighbour) keep key 0 so softmax stays finite; their output is never
    read (CCA masks those keys), and finite values keep NaN out of the gradients.
    """
    if not torch.compiler.is_compiling() and bool(valid.all()):  # compiled: always a mask, no host sync
        return None
    empty = ~valid.any(dim=1, keepdim=True)
    first = torch.zeros_like(valid)
    first[:, 0] = True
    return (valid | (empty & first))[:, None, None, :]


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int, gpt: GPTConfig, *, rotary_dim: int, context_dim: int | None) -> None:
        super().__init__()
        hd = d // heads
        self.norm1 = make_norm(gpt.norm, d, gpt.norm_eps)
        self.attn = Attention(d, heads, heads, hd, bias=gpt.bias, rotary_dim=rotary_dim,
                              rotary_theta=gpt.rotary_theta, dropout=gpt.dropout)
        self.cross = None
        if context_dim is not None:
            self.norm_x = make_norm(gpt.norm, d, gpt.norm_eps)
            self.cross = Attention(d, heads, heads, hd, bias=gpt.bias, context_dim=context_dim, dropout=gpt.dropout)
        self.norm2 = make_norm(gpt.norm, d, gpt.norm_eps)
        self.mlp = MLP(d, d_ff, gpt.mlp, gpt.bias, gpt.dropout)

    def forward(self, x: Tensor, positions: Tensor, self_mask: Tensor | None, context: Tensor | None,
                n_neighbors: int) -> Tensor:
        """x ``[B*L*K, r, d]``; context ``[B*L, m, d_model]`` (decoder hidden states of each chunk)."""
        x = x + self.attn(self.norm1(x), positions=positions, attn_mask=self_mask)
        if self.cross is not None and context is not None:
            BLK, r, d = x.shape
            xq = x.reshape(BLK // n_neighbors, n_neighbors * r, d)  # all K neighbours of a chunk query it at once
            x = x + self.cross(self.norm_x(xq), context=context).reshape(BLK, r, d)
        return x + self.mlp(self.norm2(x))


class RetroEncoder(nn.Module):
    def __init__(self, gpt: GPTConfig, retro: RetroConfig) -> None:
        super().__init__()
        d = retro.encoder_d_model or gpt.d_model
        heads = retro.encoder_heads or gpt.n_heads
        if retro.encoder_d_ff is not None:
            d_ff = retro.encoder_d_ff
        else:
            d_ff = 64 * -(-(8 * d // 3) // 64) if gpt.mlp == "swiglu" else 4 * d
        self.d_model = d
        self.in_proj = nn.Linear(gpt.d_model, d, bias=False) if d != gpt.d_model else nn.Identity()
        rot = (d // heads) if retro.encoder_rotary else 0
        self.layers = nn.ModuleList(
            EncoderLayer(d, heads, d_ff, gpt, rotary_dim=rot, context_dim=gpt.d_model if i == 0 else None)
            for i in range(retro.encoder_layers)
        )
        self.norm_out = make_norm(gpt.norm, d, gpt.norm_eps)

    def forward(self, neighbor_emb: Tensor, neighbor_mask: Tensor, chunk_hidden: Tensor) -> Tensor:
        """neighbor_emb ``[B, L, K, r, d_model]`` (token embeddings), neighbor_mask ``[B, L, K, r]`` bool,
        chunk_hidden ``[B, L, m, d_model]`` -> encoded neighbours ``[B, L, K, r, d_enc]``."""
        B, L, K, r, _ = neighbor_emb.shape
        x = self.in_proj(neighbor_emb.reshape(B * L * K, r, -1))
        mask = key_padding_mask(neighbor_mask.reshape(B * L * K, r))
        pos = torch.arange(r, device=x.device)
        ctx = chunk_hidden.reshape(B * L, chunk_hidden.shape[2], -1)
        for layer in self.layers:
            x = layer(x, pos, mask, ctx, K)
        return self.norm_out(x).reshape(B, L, K, r, self.d_model)
