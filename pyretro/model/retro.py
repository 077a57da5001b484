"""RetroModel: a GPT decoder + a RetroEncoder + ChunkedCrossAttention blocks in some decoder layers.

Data flow of one forward (chunk length m, L chunks, K neighbours of r tokens each):

    x = embed(tokens)
    for each decoder layer i:
        x = x + self_attn(norm1(x))
        if i is a CCA layer:
            h = cca_i.norm(x)
            if first CCA layer: E = encoder(embed(neighbours), chunks of h)   # once, all chunks batched
            x = x + gate * cca_i(h, E)        # token t reads the neighbours of chunk (t - m + 1) // m
        x = x + mlp(norm2(x))
    logits = lm_head(norm_f(x))

Only complete chunks are encoded: a partial last chunk is never attended (its first reader would be
position (u+1)*m - 1, past the end). With left padding, CCA and the encoder work in the real-token layout
(each row shifted so its first real token is position 0), so chunk boundaries follow each row's text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pyretro.model.cca import ChunkedCrossAttention
from pyretro.model.config import GPTConfig, RetroConfig
from pyretro.model.encoder import RetroEncoder
from pyretro.model.gpt import GPT, DecoderContext, DecodeState, check_attention_mask

# provider(rows [b], chunk_index [b], chunk_tokens [b, m]) -> (neighbours [b, K, r], mask [b, K, r] | None)
NeighborProvider = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor | None]]


class RetroModel(nn.Module):
    def __init__(self, config: GPTConfig, retro: RetroConfig) -> None:
        super().__init__()
        retro.validate(config)
        # its own copy: set_gate writes the gate into it, which must not reach other models built from `retro`
        self.config, self.retro = config, dataclasses.replace(retro)
        self.decoder = GPT(config)
        self.cca_layers = retro.resolved_cca_layers(config.n_layers)  # 1-based, as in the papers
        self._cca_index = {n - 1: j for j, n in enumerate(self.cca_layers)}  # 0-based block -> cca slot
        self.encoder = RetroEncoder(config, retro)
        self.cca = nn.ModuleList(
            ChunkedCrossAttention(config, self.encoder.d_model, retro.chunk_len, retro.cca_rotary,
                                  kv_heads=retro.cca_kv_heads, qk_norm=retro.cca_qk_norm,
                                  position_bias=retro.cca_position_bias, neighbor_len=retro.r)
            for _ in self.cca_layers
        )
        self.register_buffer("gate", torch.tensor(float(retro.gate)))
        self.register_load_state_dict_post_hook(RetroModel._sync_gate)
        self.reset_retrieval_parameters()

    @staticmethod
    def _sync_gate(module: nn.Module, incompatible_keys: Any) -> None:
        """A loaded gate buffer updates the Python mirror that compiled forwards read."""
        module.retro.gate = float(module.gate)

    # ---------------------------------------------------------------- construction
    def reset_retrieval_parameters(self) -> None:
        """Fresh encoder/CCA weights (N(0, 0.02), zero biases); CCA output projections at zero; CCA position
        biases at their aligned init."""
        for mod in (self.encoder, self.cca):
            for name, p in mod.named_parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)
                elif name.endswith("weight"):
                    nn.init.ones_(p)
        for c in self.cca:
            c.zero_output()
            c.reset_position_bias()

    @classmethod
    def from_gpt(cls, gpt: GPT, retro: RetroConfig | None = None, *, freeze_decoder: bool = False) -> RetroModel:
        """Retro-fit: copy ``gpt``'s weights into a new RetroModel whose encoder/CCA are freshly initialised.

        ``freeze_decoder=True`` is DeepMind's RETRO-fitting (train only encoder + CCA); False is InstructRetro's
        continued pretraining (train everything). The result computes exactly ``gpt``'s function until trained.
        """
        model = cls(gpt.config, retro or RetroConfig())
        p = next(gpt.parameters())
        model.to(device=p.device, dtype=p.dtype)
        model.decoder.load_state_dict(gpt.state_dict())
        if freeze_decoder:
            model.decoder.requires_grad_(False)
        return model

    def set_gate(self, value: float) -> None:
        """Scale of every CCA output; 0 turns retrieval off (InstructRetro's instruction tuning)."""
        self.gate.fill_(float(value))
        self.retro.gate = float(value)

    # ---------------------------------------------------------------- inputs
    def _prepare_neighbors(self, neighbors: Tensor, neighbor_mask: Tensor | None, B: int, n_chunks: int):
        """-> (tokens [B, n_chunks, K, r] clamped >= 0, mask [B, n_chunks, K, r]) for the complete chunks."""
        if neighbors.dim() != 4 or neighbors.shape[0] != B or neighbors.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"neighbors must be an int [B={B}, L, K, r] tensor, got {neighbors.dtype} "
                             f"{list(neighbors.shape)}")
        L = neighbors.shape[1]
        if L < n_chunks:
            raise ValueError(f"neighbors: {L} chunks given, but the sequence has {n_chunks} complete chunks "
                             f"of {self.retro.chunk_len} tokens (need L >= N // chunk_len)")
        nb = neighbors[:, :n_chunks]
        valid = nb >= 0  # -1 marks a missing neighbour / padding
        if neighbor_mask is not None:
            if neighbor_mask.dtype != torch.bool:
                raise ValueError(f"neighbor_mask must be bool (True = valid), got {neighbor_mask.dtype}")
            nm = neighbor_mask[:, :n_chunks]
            if nm.dim() == 3:  # one flag per neighbour
                nm = nm[..., None]
            if nm.dim() != 4 or nm.shape[:3] != nb.shape[:3] or nm.shape[3] not in (1, nb.shape[3]):
                raise ValueError(f"neighbor_mask shape {list(neighbor_mask.shape)} does not match neighbors "
                                 f"{list(neighbors.shape)} ([B, L, K, r] or [B, L, K])")
            valid = valid & nm
        if nb.numel() and not torch.compiler.is_compiling() and int(nb.max()) >= self.config.vocab_size:  # eager only
            raise ValueError(f"neighbors: token id {int(nb.max())} >= vocab_size={self.config.vocab_size}")
        return nb.clamp(min=0).long(), valid

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        tokens: Tensor,
        neighbors: Tensor | None = None,
        neighbor_mask: Tensor | None = None,
        *,
        attention_mask: Tensor | None = None,
        retrieval: bool = True,
        state: RetroDecodeState | None = None,
    ) -> Tensor:
        """tokens ``[B, N]``; neighbors ``[B, L, K, r]`` token ids of the neighbours of each chunk (L >= N //
        chunk_len; ids < 0 = missing); neighbor_mask ``[B, L, K, r]`` or ``[B, L, K]`` bool (True = valid);
        attention_mask ``[B, N]`` bool for left padding -> logits ``[B, N, vocab]``.

        ``retrieval=False``, ``neighbors=None`` or a zero gate run the decoder alone (no encoder/CCA compute).
        """
        if state is not None and state.length > 0:
            return self._decode_step(tokens, state)
        dec = self.decoder
        # compiled: the Python mirror of the gate (a guard, recompiles when set_gate changes it) instead of the
        # buffer, whose value is a host sync and a graph break
        gate_off = self.retro.gate == 0.0 if torch.compiler.is_compiling() else float(self.gate) == 0.0
        if not retrieval or neighbors is None or (state is None and gate_off):
            if state is not None:
                state.retrieval = False
            return dec(tokens, attention_mask, state=state)
        dec.check_tokens(tokens, state)
        check_attention_mask(attention_mask, tokens)
        B, N = tokens.shape
        m = self.retro.chunk_len
        n_chunks = N // m
        nb, nvalid = self._prepare_neighbors(neighbors, neighbor_mask, B, n_chunks)
        ctx = DecoderContext(tokens, attention_mask, state)
        if ctx.padded:  # chunks of a left-padded row start at its first real token
            n_real = N - ctx.pad
            chunk_ok = torch.arange(n_chunks, device=tokens.device)[None] < (n_real // m)[:, None]
            nvalid = nvalid & chunk_ok[:, :, None, None]
        x = dec.embed(tokens, ctx)
        kv_mask, enc = None, None
        for i, block in enumerate(dec.blocks):
            x = block.self_attention(x, ctx, i)
            j = self._cca_index.get(i)
            if j is not None:
                cca = self.cca[j]
                h = cca.norm(x)
                if ctx.padded:
                    h = _shift(h, ctx.pad, left=True)
                if state is not None and j == 0:
                    state.hidden[:, :N] = h if not ctx.padded else _shift(h, ctx.pad, left=False)
                if n_chunks == 0:  # no complete chunk: no token attends to any neighbour yet
                    x = block.feed_forward(x)
                    continue
                if enc is None:
                    chunks = h[:, : n_chunks * m].reshape(B, n_chunks, m, -1)
                    enc = self.encoder(dec.tok_emb(nb), nvalid, chunks)
                    kv_mask = nvalid
                k, v = cca.keys_values(enc)
                if state is not None:
                    state.store_chunks(j, k, v, kv_mask, 0)
                L = -(-N // m)
                if L > n_chunks:  # the partial last chunk: never attended, passed as all-masked
                    k, v = _pad_chunk(k), _pad_chunk(v)
                    kmask = _pad_chunk(kv_mask)
                else:
                    kmask = kv_mask
                y = cca(h, k, v, kmask)
                if ctx.padded:
                    y = _shift(y, ctx.pad, left=False)
                x = x + self.gate.to(y.dtype) * y
            x = block.feed_forward(x)
        if state is not None:
            state.tokens[:, :N] = tokens
            state.length += N
        return dec.head(x)

    # ---------------------------------------------------------------- incremental decoding
    def new_state(self, batch: int, max_len: int, provider: NeighborProvider | None = None,
                  dtype: torch.dtype | None = None, device=None) -> RetroDecodeState:
        p = self.decoder.tok_emb.weight
        return RetroDecodeState(self, batch, max_len, provider, dtype or p.dtype, device or p.device)

    def _decode_step(self, tokens: Tensor, state: RetroDecodeState) -> Tensor:
        """One new token per row after a prefill; re-retrieves for every row whose chunk it completes."""
        if tokens.shape[1] != 1:
            raise ValueError(f"after the prompt, decode one token per step; got {tokens.shape[1]}")
        dec = self.decoder
        if not state.retrieval:
            return dec(tokens, state=state)
        dec.check_tokens(tokens, state)
        m = self.retro.chunk_len
        t = state.length
        if t >= state.max_len:
            raise ValueError(f"decode state is full: capacity {state.max_len} tokens (new_state(max_len=...))")
        state.tokens[:, t] = tokens[:, 0]
        ctx = DecoderContext(tokens, None, state)
        pos = t - state.pad  # [B] real position of the new token
        u = torch.div(pos + 1, m, rounding_mode="floor") - 1  # chunk it attends (-1: none yet)
        completes = ((pos + 1) % m == 0) & (u >= 0)
        rows = completes.nonzero().flatten()
        x = dec.embed(tokens, ctx)
        B = tokens.shape[0]
        ar = torch.arange(B, device=tokens.device)
        new_enc = None
        for i, block in enumerate(dec.blocks):
            x = block.self_attention(x, ctx, i)
            j = self._cca_index.get(i)
            if j is not None:
                cca = self.cca[j]
                h = cca.norm(x)
                if j == 0:
                    state.hidden[:, t] = h[:, 0]
                    if rows.numel():  # a chunk just completed: retrieve its neighbours and encode them once
                        ch_tok = state.tokens[rows, t - m + 1: t + 1]
                        if state.provider is None:
                            raise ValueError("a chunk completed during decoding but the state has no neighbour "
                                             "provider (pass a retriever or fixed neighbours to generate)")
                        nb, nmask = state.provider(rows, u[rows], ch_tok)
                        nb, nvalid = self._prepare_neighbors(nb[:, None], None if nmask is None else nmask[:, None],
                                                             rows.numel(), 1)
                        chunk_h = state.hidden[rows, t - m + 1: t + 1][:, None]
                        new_enc = (self.encoder(dec.tok_emb(nb), nvalid, chunk_h), nvalid)
                if new_enc is not None:
                    k, v = cca.keys_values(new_enc[0])
                    state.store_rows(j, rows, u[rows], k[:, 0], v[:, 0], new_enc[1][:, 0])
                uc = u.clamp(min=0)
                ck, cv, cm = state.ck[j], state.cv[j], state.cmask
                if ck is None:  # no chunk encoded yet anywhere
                    x = block.feed_forward(x)
                    continue
                kk = ck[ar, uc].flatten(1, 2)  # [B, K*r, H, D]
                vv = cv[ar, uc].flatten(1, 2)
                km = cm[ar, uc].flatten(1) & (u >= 0)[:, None]
                y = cca.attend_cached(h, kk, vv, km, (pos + 1) % m, state.r)
                x = x + self.gate.to(y.dtype) * y
            x = block.feed_forward(x)
        state.length += 1
        return dec.head(x)


class RetroDecodeState(DecodeState):
    """DecodeState + what Retro needs across steps: the first CCA layer's hidden states (to encode a chunk
    when it completes), per-CCA-layer keys/values of every encoded chunk, and the token history."""

    def __init__(self, model: RetroModel, batch: int, max_len: int, provider: NeighborProvider | None,
                 dtype: torch.dtype, device) -> None:
        super().__init__(model.decoder, batch, max_len, dtype, device)
        self.model = model
        self.provider = provider
        self.retrieval = True
        self.hidden = torch.zeros(batch, max_len, model.config.d_model, dtype=dtype, device=device)
        self.tokens = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.n_chunks = max_len // model.retro.chunk_len + 1
        n = len(model.cca)
        self.ck: list[Tensor | None] = [None] * n
        self.cv: list[Tensor | None] = [None] * n
        self.cmask: Tensor | None = None
        self.r = 0

    def _alloc(self, j: int, k: Tensor, mask: Tensor) -> None:
        K, r, H, D = k.shape[-4:]
        B = self.hidden.shape[0]
        if self.ck[j] is None:
            self.ck[j] = k.new_zeros(B, self.n_chunks, K, r, H, D)
            self.cv[j] = k.new_zeros(B, self.n_chunks, K, r, H, D)
        if self.cmask is None:
            self.cmask = torch.zeros(B, self.n_chunks, K, r, dtype=torch.bool, device=k.device)
            self.r = r
        if self.ck[j].shape[2:4] != (K, r):
            raise ValueError(f"neighbors: every chunk needs the same K x r = {tuple(self.ck[j].shape[2:4])}, "
                             f"got {(K, r)}")

    def store_chunks(self, j: int, k: Tensor, v: Tensor, mask: Tensor, start: int) -> None:
        """Prefill: k/v ``[B, L, K, r, H, D]`` of chunks ``start..start+L-1`` of every row."""
        if k.shape[1] == 0:
            return
        self._alloc(j, k, mask)
        L = k.shape[1]
        self.ck[j][:, start:start + L] = k
        self.cv[j][:, start:start + L] = v
        if j == 0:
            self.cmask[:, start:start + L] = mask

    def store_rows(self, j: int, rows: Tensor, chunk: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> None:
        """Decode: k/v ``[b, K, r, H, D]`` of chunk ``chunk[i]`` of row ``rows[i]``."""
        self._alloc(j, k, mask)
        self.ck[j][rows, chunk] = k
        self.cv[j][rows, chunk] = v
        if j == 0:
            self.cmask[rows, chunk] = mask


def _shift(x: Tensor, pad: Tensor, left: bool) -> Tensor:
    """Move each row by its padding: left=True drops ``pad[b]`` leading positions (zeros appended);
    left=False undoes it."""
    B, N = x.shape[:2]
    idx = torch.arange(N, device=x.device)[None] + (pad[:, None] if left else -pad[:, None])
    ok = (idx >= 0) & (idx < N)
    g = idx.clamp(0, N - 1).view(B, N, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, g) * ok.view(B, N, *([1] * (x.dim() - 2))).to(x.dtype)


def _pad_chunk(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], dim=1)
