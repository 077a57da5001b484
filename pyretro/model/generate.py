"""Text generation for GPT and RetroModel: KV-cached incremental decoding, Retro-style re-retrieval.

Retro samples chunk by chunk: when the running text completes a chunk, its neighbours are retrieved
(``retriever`` callback) and encoded once, and the following tokens attend to them (the last token of
chunk u already does: it is the first reader of chunk u's neighbours). ``neighbors`` instead fixes the
neighbours: ``[B, K, r]`` for every chunk (how InstructRetro evaluates with context passages), or
``[B, L, K, r]`` per chunk. ``use_cache=False`` recomputes the whole sequence at every step (the
reference the cached path is tested against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pyretro.model.gpt import GPT
from pyretro.model.retro import NeighborProvider, RetroModel

# retrieve(chunk_tokens [b, chunk_len]) -> neighbours [b, K, r] (ids < 0 = padding), or (neighbours, mask [b, K, r])
Retriever = Callable[[Tensor], "Tensor | tuple[Tensor, Tensor | None]"]


def make_provider(retriever: Retriever | None = None, neighbors: Tensor | None = None,
                  neighbor_mask: Tensor | None = None) -> NeighborProvider | None:
    """Turns a retriever callback or fixed neighbours into ``provider(rows, chunk_index, chunk_tokens)``."""
    if retriever is not None and neighbors is not None:
        raise ValueError("give either retriever or neighbors, not both")
    if retriever is not None:
        def from_retriever(rows: Tensor, chunk: Tensor, chunk_tokens: Tensor):
            out = retriever(chunk_tokens)
            nb, mask = out if isinstance(out, tuple) else (out, None)
            if not isinstance(nb, Tensor) or nb.dim() != 3 or nb.shape[0] != chunk_tokens.shape[0]:
                raise ValueError(f"retriever must return neighbours [b={chunk_tokens.shape[0]}, K, r], got "
                                 f"{getattr(nb, 'shape', type(nb))}")
            return nb.to(chunk_tokens.device).long(), None if mask is None else mask.to(chunk_tokens.device)
        return from_retriever
    if neighbors is None:
        return None
    if neighbors.dim() not in (3, 4):
        raise ValueError(f"neighbors must be [B, K, r] (every chunk) or [B, L, K, r] (per chunk), got "
                         f"{list(neighbors.shape)}")

    def fixed(rows: Tensor, chunk: Tensor, chunk_tokens: Tensor):
        if neighbors.dim() == 3:
            return neighbors[rows], None if neighbor_mask is None else neighbor_mask[rows]
        L = neighbors.shape[1]
        c = chunk.clamp(max=L - 1)
        nb = neighbors[rows, c].clone()
        nb[chunk >= L] = -1  # chunks past the given ones have no neighbours
        mask = None if neighbor_mask is None else neighbor_mask[rows, c]
        return nb, mask
    return fixed


def prompt_neighbors(provider: NeighborProvider, tokens: Tensor, pad: Tensor, chunk_len: int):
    """Neighbours ``[B, N // m, K, r]`` (+ mask) of every complete chunk of left-padded ``tokens``, chunk
    u of row b being ``tokens[b, pad_b + u*m : pad_b + (u+1)*m]``; one provider call per chunk index."""
    B, N = tokens.shape
    m = chunk_len
    L = N // m
    n_complete = (N - pad) // m
    nbs, masks = [], []
    for u in range(L):  # one batched call per chunk index (rows that have chunk u)
        rows = (n_complete > u).nonzero().flatten()
        idx = (pad[rows, None] + u * m + torch.arange(m, device=tokens.device)[None])
        nb, mask = provider(rows, torch.full_like(rows, u), tokens[rows[:, None], idx])
        if mask is None:
            mask = torch.ones_like(nb, dtype=torch.bool)
        elif mask.dim() == nb.dim() - 1:  # one flag per neighbour
            mask = mask[..., None]
        full = torch.full((B, *nb.shape[1:]), -1, dtype=torch.long, device=tokens.device)
        fm = torch.zeros((B, *nb.shape[1:]), dtype=torch.bool, device=tokens.device)
        full[rows], fm[rows] = nb.long(), mask.bool().expand_as(nb)
        nbs.append(full)
        masks.append(fm)
    if not nbs:
        return torch.full((B, 0, 1, 1), -1, dtype=torch.long, device=tokens.device), None
    return torch.stack(nbs, 1), torch.stack(masks, 1)


def sample(logits: Tensor, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Next tokens ``[B]`` from logits ``[B, V]``: greedy when temperature == 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _left_pad(prompts: Sequence[Sequence[int]] | Tensor, pad_id: int, device) -> tuple[Tensor, Tensor]:
    if isinstance(prompts, Tensor):
        if prompts.dim() != 2:
            raise ValueError(f"prompts tensor must be [B, N], got {list(prompts.shape)}")
        return prompts.to(device).long(), torch.ones_like(prompts, dtype=torch.bool, device=device)
    if len(prompts) == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts: need at least one prompt, each with at least one token")
    n = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), n, dtype=torch.bool)
    for b, p in enumerate(prompts):
        tokens[b, n - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[b, n - len(p):] = True
    return tokens.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: GPT | RetroModel,
    prompts: Sequence[Sequence[int]] | Tensor,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    pad_id: int = 0,
    retriever: Retriever | None = None,
    neighbors: Tensor | None = None,
    neighbor_mask: Tensor | None = None,
    retrieval: bool = True,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Continues each prompt (a list of token ids; batched with left padding) and returns the new tokens of
    each row, without the stop token that ended it."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    tokens, mask = _left_pad(prompts, pad_id, device)
    B, N = tokens.shape
    is_retro = isinstance(model, RetroModel)
    cfg = model.config
    if cfg.position == "learned" and N + max_new_tokens - 1 > cfg.max_seq_len:
        raise ValueError(f"prompt ({N} tokens) + max_new_tokens={max_new_tokens} exceeds the model's "
                         f"max_seq_len={cfg.max_seq_len} (learned positions)")
    provider = make_provider(retriever, neighbors, neighbor_mask) if is_retro and retrieval else None
    m = model.retro.chunk_len if is_retro else 0
    pad = (~mask).sum(1)
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    was_training = model.training
    model.eval()
    try:
        def full_forward(toks: Tensor, msk: Tensor, state=None) -> Tensor:
            if provider is None:
                return model(toks, attention_mask=msk, state=state) if is_retro else model(toks, msk, state=state)
            nb, nm = prompt_neighbors(provider, toks, pad, m)
            return model(toks, nb, nm, attention_mask=msk, state=state)

        state = None
        if use_cache and max_new_tokens > 0:
            state = model.new_state(B, N + max_new_tokens, provider) if is_retro else model.new_state(B, N + max_new_tokens)
        logits = full_forward(tokens, mask, state)[:, -1] if max_new_tokens > 0 else None
        for step in range(max_new_tokens):
            nxt = sample(logits, temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            hit = torch.isin(nxt, stops) & ~done if stops.numel() else torch.zeros_like(done)
            for b in (~done & ~hit).nonzero().flatten().tolist():
                out[b].append(int(nxt[b]))
            done |= hit
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool, device=device)], 1)
            if state is not None:
                logits = model(nxt[:, None], state=state)[:, -1]
            else:
                logits = full_forward(tokens, mask)[:, -1]
    finally:
        model.train(was_training)
    return out
