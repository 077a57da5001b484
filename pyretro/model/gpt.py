"""GPT: a pre-norm decoder-only transformer (GPT-2 and Llama family), readable top to bottom."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyretro.model.config import GPTConfig
from pyretro.model.layers import MLP, Attention, KVSlot, make_norm


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)). Retro inserts its CCA between the two (see retro.py)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.attn = Attention(
            cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.dim_head, bias=cfg.bias,
            rotary_dim=cfg.rotary_dim, rotary_theta=cfg.rotary_theta,
            rotary_interleaved=cfg.rotary_interleaved, dropout=cfg.dropout,
        )
        self.norm2 = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg.d_model, cfg.ff_dim, cfg.mlp, cfg.bias, cfg.dropout)

    def self_attention(self, x: Tensor, ctx: DecoderContext, layer: int) -> Tensor:
        slot = None if ctx.state is None else ctx.state.slots[layer]
        return x + self.attn(self.norm1(x), positions=ctx.positions, attn_mask=ctx.attn_mask,
                             causal=ctx.causal, kv_cache=slot)

    def feed_forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm2(x))

    def forward(self, x: Tensor, ctx: DecoderContext, layer: int) -> Tensor:
        return self.feed_forward(self.self_attention(x, ctx, layer))


class DecodeState:
    """KV caches of an incremental decode: one slot per layer, and which key positions are real tokens."""

    def __init__(self, model: GPT, batch: int, max_len: int, dtype: torch.dtype, device) -> None:
        cfg = model.config
        self.max_len = max_len
        self.slots = [KVSlot(batch, max_len, cfg.kv_heads, cfg.dim_head, dtype, device) for _ in range(cfg.n_layers)]
        self.key_valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)  # left padding per row
        self.length = 0  # columns filled so far


class DecoderContext:
    """Per-forward inputs every block needs: rotary positions, the self-attention mask, the cache."""

    def __init__(self, tokens: Tensor, attention_mask: Tensor | None, state: DecodeState | None) -> None:
        B, S = tokens.shape
        dev = tokens.device
        start = 0 if state is None else state.length
        if state is not None:
            if attention_mask is not None:  # the prompt: remember which columns are padding
                state.key_valid[:, start:start + S] = attention_mask
            valid = state.key_valid[:, : start + S]
        else:
            valid = attention_mask
        if valid is not None and bool(valid.all()):
            valid = None
        self.start, self.state, self.padded = start, state, valid is not None
        cols = torch.arange(start, start + S, device=dev)
        # Only left padding exists, so a row's padding count is its number of invalid columns.
        self.pad = torch.zeros(B, dtype=torch.long, device=dev) if valid is None else (~valid).sum(1)
        if state is not None and start == 0:
            state.pad = self.pad
        self.positions = cols if valid is None else (cols[None, :] - self.pad[:, None]).clamp(min=0)  # [S] | [B, S]
        self.causal, self.attn_mask = False, None
        if valid is None and (start == 0 or S == 1):
            self.causal = start == 0  # SDPA's is_causal fast path; one new token sees every cached key
        else:
            keys = torch.arange(start + S, device=dev)
            mask = keys[None, :] <= cols[:, None]  # [S, T] causal, with cached keys before the queries
            if valid is not None:
                # A padding query still sees itself, so no softmax row is empty (its output is never used).
                mask = mask[None] & (valid[:, None, :] | (keys[None, :] == cols[:, None])[None])
            self.attn_mask = mask.view(-1, 1, S, start + S)


def _is_left_padded(mask: Tensor) -> Tensor:
    """True when every row is False...False True...True (left padding)."""
    return (mask.long().diff(dim=1) >= 0).all()


def check_attention_mask(attention_mask: Tensor | None, tokens: Tensor) -> None:
    if attention_mask is None:
        return
    if attention_mask.shape != tokens.shape or attention_mask.dtype != torch.bool:
        raise ValueError(f"attention_mask must be bool {list(tokens.shape)} (True = real token), got "
                         f"{attention_mask.dtype} {list(attention_mask.shape)}")
    if not bool(_is_left_padded(attention_mask)):
        raise ValueError("attention_mask: only left padding is supported (each row False...False True...True)")
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("attention_mask: every row needs at least one real token (the last column)")


class GPT(nn.Module):
    """Token (+ learned position) embedding -> blocks -> final norm -> LM head."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.max_seq_len, c.d_model) if c.position == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm_f = make_norm(c.norm, c.d_model, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=c.lm_head_bias)
        self.reset_parameters()
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers), zero biases."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * self.config.n_layers) if name.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def embed(self, tokens: Tensor, ctx: DecoderContext) -> Tensor:
        x = self.tok_emb(tokens)
        if self.pos_emb is not None:
            x = x + self.pos_emb(ctx.positions)
        return self.drop(x)

    def head(self, x: Tensor) -> Tensor:
        return self.lm_head(self.norm_f(x))

    def check_tokens(self, tokens: Tensor, state: DecodeState | None = None) -> None:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an int64/int32 [B, N] tensor, got {tokens.dtype} {list(tokens.shape)}")
        end = tokens.shape[1] + (0 if state is None else state.length)
        if self.pos_emb is not None and end > self.config.max_seq_len:
            raise ValueError(f"tokens: sequence length {end} > max_seq_len={self.config.max_seq_len}")
        # Reading the ids is a host sync that would split a torch.compile graph: eager only (compiled, the
        # embedding lookup's own bounds check still rejects them).
        if (tokens.numel() and not torch.compiler.is_compiling()
                and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size)):
            raise ValueError(f"tokens: ids must lie in [0, {self.config.vocab_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    def forward(self, tokens: Tensor, attention_mask: Tensor | None = None, *,
                state: DecodeState | None = None) -> Tensor:
        """tokens ``[B, N]`` -> logits ``[B, N, vocab]``. ``attention_mask [B, N]`` bool marks real tokens
        (left padding only); ``state`` continues an incremental decode (see ``pyretro.model.generate``)."""
        self.check_tokens(tokens, state)
        check_attention_mask(attention_mask, tokens)
        ctx = DecoderContext(tokens, attention_mask, state)
        x = self.embed(tokens, ctx)
        for i, block in enumerate(self.blocks):
            x = block(x, ctx, i)
        if state is not None:
            state.length += tokens.shape[1]
        return self.head(x)

    def new_state(self, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None) -> DecodeState:
        p = self.tok_emb.weight
        return DecodeState(self, batch, max_len, dtype or p.dtype, device or p.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lm_loss(logits: Tensor, tokens: Tensor, loss_mask: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy: position t predicts ``tokens[:, t+1]``.

    ``loss_mask [B, N]`` bool: True where the *target* token counts (e.g. answer tokens only for
    InstructRetro's answer-only loss); False tokens are ignored.
    """
    targets = tokens[:, 1:]
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    if loss_mask is None:
        return F.cross_entropy(flat, targets.reshape(-1))
    if loss_mask.shape != tokens.shape:
        raise ValueError(f"loss_mask shape {list(loss_mask.shape)} != tokens shape {list(tokens.shape)}")
    t = targets.masked_fill(~loss_mask[:, 1:].bool(), -100)
    return F.cross_entropy(flat, t.reshape(-1), ignore_index=-100)
