"""Dataset-leakage filter of the RETRO paper's analysis: find evaluation chunks that share a run of at least
``min_overlap`` (8) contiguous tokens with the neighbours they are predicted from.

Vectorized: every window of ``min_overlap`` tokens (of the chunks and of their valid neighbour tokens) gets a
64-bit hash mixed with its row, chunk windows are looked up in the sorted neighbour hashes (``searchsorted``),
and every hash hit is confirmed by comparing the actual tokens, so a hash collision can never mark a chunk.
"""

from __future__ import annotations

import numpy as np

__all__ = ["leaky_chunks"]

_MUL = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime
_ROW = np.uint64(0x9E3779B97F4A7C15)


def _as_np(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == bool and name.endswith("mask"):
        return a
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _window_hashes(windows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """64-bit hashes of ``windows [n, w]`` (int64 tokens) salted by ``rows [n]`` (FNV-1a over the tokens)."""
    h = np.full(len(windows), 0xCBF29CE484222325, dtype=np.uint64) ^ (rows.astype(np.uint64) * _ROW)
    for i in range(windows.shape[1]):
        h = (h ^ windows[:, i].astype(np.uint64)) * _MUL
    return h


def leaky_chunks(chunks, neighbors, neighbor_mask=None, min_overlap: int = 8) -> np.ndarray:
    """bool ``[n]``: True where ``chunks[i]`` shares >= ``min_overlap`` contiguous tokens with any valid token run
    of ``neighbors[i]``.

    chunks ``[n, m]`` int token ids (ids < 0 are padding and never match); neighbors ``[n, K, r]`` int
    (ids < 0 = missing); neighbor_mask ``[n, K, r]`` or ``[n, K]`` bool, True = valid. numpy or torch inputs.
    """
    w = int(min_overlap)
    if w < 1:
        raise ValueError(f"min_overlap must be >= 1, got {min_overlap}")
    c = _as_np(chunks, "chunks")
    nb = _as_np(neighbors, "neighbors")
    if c.ndim != 2 or nb.ndim != 3 or nb.shape[0] != c.shape[0]:
        raise ValueError(f"chunks must be [n, m] and neighbors [n, K, r] with the same n, got {list(c.shape)} "
                         f"and {list(nb.shape)}")
    n = c.shape[0]
    out = np.zeros(n, dtype=bool)
    if n == 0 or c.shape[1] < w or nb.shape[2] < w or nb.shape[1] == 0:
        return out
    valid = nb >= 0
    if neighbor_mask is not None:
        nm = _as_np(neighbor_mask, "neighbor_mask").astype(bool)
        if nm.ndim == 2:
            nm = nm[..., None]
        if nm.shape[:2] != nb.shape[:2] or nm.shape[2] not in (1, nb.shape[2]):
            raise ValueError(f"neighbor_mask shape {list(nm.shape)} does not match neighbors {list(nb.shape)}")
        valid &= nm
    # all windows of w tokens; a window counts only if all its tokens are valid
    nwin = np.lib.stride_tricks.sliding_window_view(nb, w, axis=2)  # [n, K, r-w+1, w]
    nok = np.lib.stride_tricks.sliding_window_view(valid, w, axis=2).all(-1)
    nrow = np.broadcast_to(np.arange(n)[:, None, None], nok.shape)[nok]
    nflat = nwin[nok]  # [p, w]
    if len(nflat) == 0:
        return out
    cwin = np.lib.stride_tricks.sliding_window_view(c, w, axis=1)  # [n, m-w+1, w]
    cok = (cwin >= 0).all(-1)
    crow = np.broadcast_to(np.arange(n)[:, None], cok.shape)[cok]
    cflat = cwin[cok]
    if len(cflat) == 0:
        return out
    nh = _window_hashes(nflat, nrow)
    order = np.argsort(nh, kind="stable")
    nh_sorted = nh[order]
    ch = _window_hashes(cflat, crow)
    pos = np.minimum(np.searchsorted(nh_sorted, ch), len(nh_sorted) - 1)
    cand = np.flatnonzero(nh_sorted[pos] == ch)
    if len(cand):  # confirm hits on the tokens themselves (rows are equal too: the row is in the hash)
        j = order[pos[cand]]
        same = (nflat[j] == cflat[cand]).all(1) & (nrow[j] == crow[cand])
        out[crow[cand[same]]] = True
    return out
