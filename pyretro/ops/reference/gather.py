"""Plain-PyTorch neighbour gather: the semantics contract of ``pyretro.ops.gather_neighbors``.

Store arrays (docs/store.md): ``tokens [T]``, ``doc_offsets [D+1]`` (token offset of each document),
``doc_chunks [D+1]`` (first chunk id of each document), ``chunk_doc [C]`` (document of each chunk).
Chunk ``i`` of document ``d`` starts at ``doc_offsets[d] + (i - doc_chunks[d]) * chunk_len``. The row for
id ``i`` holds up to ``r`` tokens from that start, stopping at the end of document ``d`` (at the end of the
chunk when ``continuation=False``); the rest is ``pad_id`` with mask False. Id -1: all padding.
Ids < -1 or >= C raise IndexError.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gather_neighbors_reference(
    tokens: Tensor,
    doc_offsets: Tensor,
    doc_chunks: Tensor,
    chunk_doc: Tensor,
    neighbor_ids: Tensor,
    chunk_len: int,
    r: int,
    pad_id: int = 0,
    continuation: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(out int64 [..., r], mask bool [..., r])`` for ``neighbor_ids [...]``."""
    ids = torch.as_tensor(neighbor_ids, dtype=torch.int64)
    flat = ids.reshape(-1)
    num_chunks = chunk_doc.shape[0]
    bad = (flat < -1) | (flat >= num_chunks)
    if bool(bad.any()):
        raise IndexError(f"neighbor_ids: chunk id {int(flat[bad][0])} is out of range [-1, {num_chunks})")
    valid = flat >= 0
    safe = torch.where(valid, flat, torch.zeros_like(flat))
    if num_chunks == 0:  # only -1 ids can reach here
        d = torch.zeros_like(flat)
        start = torch.zeros_like(flat)
        stop = start
    else:
        d = chunk_doc.long()[safe]
        start = doc_offsets.long()[d] + (safe - doc_chunks.long()[d]) * chunk_len
        stop = doc_offsets.long()[d + 1]
        if not continuation:
            stop = torch.minimum(stop, start + chunk_len)
    n = torch.where(valid, (stop - start).clamp(0, r), torch.zeros_like(start))
    t = torch.arange(r, dtype=torch.int64, device=flat.device)
    mask = t[None, :] < n[:, None]
    idx = (start[:, None] + t[None, :]).clamp(0, max(tokens.shape[0] - 1, 0))
    vals = _widen(tokens, idx) if tokens.shape[0] else torch.zeros_like(idx)
    out = torch.where(mask, vals, torch.full_like(vals, pad_id))
    return out.reshape(*ids.shape, r), mask.reshape(*ids.shape, r)


def _widen(tokens: Tensor, idx: Tensor) -> Tensor:
    """``tokens[idx]`` as int64; uint16/uint32 read through their signed bit patterns (torch's unsigned
    types support few ops)."""
    if tokens.dtype == torch.uint16:
        return tokens.view(torch.int16)[idx].to(torch.int64) & 0xFFFF
    if tokens.dtype == torch.uint32:
        return tokens.view(torch.int32)[idx].to(torch.int64) & 0xFFFFFFFF
    return tokens[idx].to(torch.int64)
