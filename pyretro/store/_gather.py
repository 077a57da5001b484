"""Argument handling for ``ChunkStore.gather``; the work is done by the C++ core (``_C.store_gather``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pyretro._tensor import view


def _is_torch(x: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, torch.Tensor)


def normalize_ids(ids: Any) -> tuple[Any, bool]:
    """(contiguous int64 CPU ids as numpy or torch, whether the input was a torch tensor)."""
    if type(ids) is np.ndarray and ids.dtype == np.int64 and ids.flags.c_contiguous:
        return ids, False  # the common case, without further checks
    if _is_torch(ids):
        import torch

        if ids.device.type != "cpu":
            raise ValueError(
                "neighbor_ids: must be a CPU tensor (use pyretro.ops.gather_neighbors for device tensors)"
            )
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"neighbor_ids: expected integer ids, got dtype {ids.dtype}")
        return ids.to(torch.int64).contiguous(), True
    a = np.asarray(ids)
    if a.size and a.dtype.kind not in "iu":
        raise TypeError(f"neighbor_ids: expected integer ids, got dtype {a.dtype}")
    return np.asarray(a, dtype=np.int64, order="C"), False  # keeps 0-d shape


def _alloc(shape: tuple[int, ...], kind: str, like_torch: bool) -> Any:
    if like_torch:
        import torch

        return torch.empty(shape, dtype=torch.int64 if kind == "tokens" else torch.bool)
    return np.empty(shape, dtype=np.int64 if kind == "tokens" else np.bool_)


def store_views(tokens: np.ndarray, doc_offsets: np.ndarray, doc_chunks: np.ndarray,
                chunk_doc: np.ndarray) -> tuple:
    """View tuples of a store's arrays, built once per store (the caller keeps the arrays alive)."""
    return (view(tokens, "tokens"), view(doc_offsets, "doc_offsets"), view(doc_chunks, "doc_chunks"),
            view(chunk_doc, "chunk_doc"))


def gather(
    views: tuple,
    neighbor_ids: Any,
    chunk_len: int,
    r: int,
    continuation: bool,
    out: Any = None,
    out_mask: Any = None,
    pad_id: int = 0,
) -> tuple[Any, Any]:
    from pyretro._ext import _C, sync_threads

    sync_threads()
    ids, ids_torch = normalize_ids(neighbor_ids)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r <= 0:
        raise ValueError(f"r: must be a positive int, got {r!r}")
    shape = tuple(ids.shape) + (int(r),)
    if out is None:
        out = _alloc(shape, "tokens", ids_torch if out_mask is None else _is_torch(out_mask))
    if out_mask is None:
        out_mask = _alloc(shape, "mask", _is_torch(out))
    for name, buf in (("out", out), ("out_mask", out_mask)):
        if tuple(buf.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} (neighbor_ids.shape + (r,)), got {tuple(buf.shape)}")
    _C.store_gather(
        *views,
        view(ids, "neighbor_ids"),
        int(chunk_len),
        int(r),
        view(out, "out"),
        view(out_mask, "out_mask"),
        int(pad_id),
        bool(continuation),
    )
    return out, out_mask
