"""Neighbour gather as a ``torch.library`` op, for chunk stores held as tensors (CPU or GPU memory).

``gather_neighbors`` returns exactly the rows of ``ChunkStore.gather`` (docs/store.md,
:func:`pyretro.ops.reference.gather.gather_neighbors_reference`): for each chunk id, the chunk plus its
continuation within the same document, ``r`` tokens, padded with ``pad_id`` / mask False; id -1 is a
missing neighbour (all padding). The CPU path is the store's own C++ core (``_C.store_gather``); the CUDA
path is a one-warp-per-row kernel on the current stream. ``DeviceChunkStore`` keeps a store's arrays on a
device and gathers from them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyretro._tensor import cuda_stream, view
from pyretro.ops._device import cuda_kernels_missing

_TOKEN_DTYPES = (torch.uint16, torch.uint32, torch.int32, torch.int64)
_UPLOAD_SLICE = 1 << 26  # tokens per host->device copy when uploading a store


def _as_tensor(a: Any, name: str) -> Tensor:
    if isinstance(a, Tensor):
        return a
    if isinstance(a, np.ndarray):
        with warnings.catch_warnings():  # read-only memmaps: we never write through these tensors
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.ascontiguousarray(a))
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(a).__name__}")


def _check_store_arrays(tokens: Tensor, doc_offsets: Tensor, doc_chunks: Tensor, chunk_doc: Tensor) -> None:
    if tokens.dtype not in _TOKEN_DTYPES:
        hint = " (reinterpret with .view(torch.uint16))" if tokens.dtype == torch.int16 else ""
        raise TypeError(f"tokens: dtype must be uint16, uint32, int32 or int64, got {tokens.dtype}{hint}")
    for name, a in (("tokens", tokens), ("doc_offsets", doc_offsets), ("doc_chunks", doc_chunks),
                    ("chunk_doc", chunk_doc)):
        if a.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D array, got shape {list(a.shape)}")
        if name != "tokens" and a.dtype != torch.int64:
            raise TypeError(f"{name}: dtype must be int64, got {a.dtype}")
        if a.device != tokens.device:
            raise ValueError(f"{name}: on {a.device} but tokens is on {tokens.device}")
    if doc_offsets.shape[0] < 1 or doc_chunks.shape[0] != doc_offsets.shape[0]:
        raise ValueError(
            f"doc_chunks: expected num_docs + 1 = {doc_offsets.shape[0]} entries like doc_offsets "
            f"(at least 1), got {doc_chunks.shape[0]}"
        )


def _check_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if name != "pad_id" and v <= 0:
        raise ValueError(f"{name}: must be positive, got {v}")
    return int(v)


def _check_id_range(ids: Tensor, num_chunks: int) -> None:
    """One device sync: min and max of the ids."""
    if ids.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(ids)).tolist())
    if lo < -1 or hi >= num_chunks:
        bad = lo if lo < -1 else hi
        raise IndexError(
            f"neighbor_ids: chunk id {bad} is out of range; valid ids are -1 (missing) and [0, {num_chunks})"
        )


def _warn_no_cuda() -> None:  # one policy for every op (warn once / PYRETRO_CUDA_FALLBACK): ops/_device.py
    cuda_kernels_missing("gather_neighbors")


# --- torch.library op -------------------------------------------------------------------------------------
@torch.library.custom_op("pyretro::gather_neighbors", mutates_args=())
def _gather_op(
    tokens: Tensor,
    doc_offsets: Tensor,
    doc_chunks: Tensor,
    chunk_doc: Tensor,
    neighbor_ids: Tensor,
    chunk_len: int,
    r: int,
    pad_id: int,
    continuation: bool,
    check_ids: bool,
) -> tuple[Tensor, Tensor]:
    from pyretro._ext import _C, cuda_compiled, sync_threads

    sync_threads()
    ids = neighbor_ids.contiguous()
    shape = (*ids.shape, r)
    out = torch.empty(shape, dtype=torch.int64, device=ids.device)
    mask = torch.empty(shape, dtype=torch.bool, device=ids.device)
    args = [view(a.contiguous(), n) for a, n in ((tokens, "tokens"), (doc_offsets, "doc_offsets"),
                                                  (doc_chunks, "doc_chunks"), (chunk_doc, "chunk_doc"))]
    if ids.device.type == "cpu":  # the chunk store's own core (validates ids itself, before writing)
        _C.store_gather(*args, view(ids, "neighbor_ids"), chunk_len, r, view(out, "out"), view(mask, "out_mask"),
                        pad_id, continuation)
    else:
        if not cuda_compiled():  # CPU-only build given CUDA tensors: same rows, plain PyTorch
            _warn_no_cuda()
            from pyretro.ops.reference.gather import gather_neighbors_reference

            return gather_neighbors_reference(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, pad_id,
                                              continuation)
        if check_ids:
            _check_id_range(ids, chunk_doc.shape[0])
        _C.gather_neighbors(*args, view(ids, "neighbor_ids"), chunk_len, r, continuation, pad_id,
                            view(out, "out"), view(mask, "mask"), cuda_stream(ids))
    return out, mask


@_gather_op.register_fake
def _(tokens, doc_offsets, doc_chunks, chunk_doc, neighbor_ids, chunk_len, r, pad_id, continuation, check_ids):
    shape = (*neighbor_ids.shape, r)
    return (neighbor_ids.new_empty(shape, dtype=torch.int64), neighbor_ids.new_empty(shape, dtype=torch.bool))


def gather_neighbors(
    tokens: Any,
    doc_offsets: Any,
    doc_chunks: Any,
    chunk_doc: Any,
    neighbor_ids: Any,
    chunk_len: int,
    r: int,
    pad_id: int = 0,
    *,
    continuation: bool = True,
    check_ids: bool = True,
) -> tuple[Tensor, Tensor]:
    """Chunk + continuation rows for ``neighbor_ids [...]``: ``(out int64 [..., r], mask bool [..., r])``.

    Store arrays (tensors, or numpy arrays for a CPU store): ``tokens [T]`` uint16/uint32/int32/int64,
    ``doc_offsets [D+1]``, ``doc_chunks [D+1]``, ``chunk_doc [C]`` int64, all on one device. Chunk ``i`` of
    document ``d = chunk_doc[i]`` starts at ``doc_offsets[d] + (i - doc_chunks[d]) * chunk_len``; its row is
    up to ``r`` tokens from there, stopped at the end of document ``d`` (the end of the chunk with
    ``continuation=False``), then ``pad_id`` with mask False. Id -1 gives an all-padding row.

    ``neighbor_ids`` must be on the store's device (a numpy array or list is moved there). An id < -1 or
    >= C raises IndexError: on CPU from the store core before anything is written; on CUDA from a min/max
    check costing one device sync (``check_ids=False`` skips it: such ids then give all-padding rows).
    On CPU a store whose arrays are inconsistent raises ValueError; the CUDA kernel cannot raise, it
    bounds-guards every read and pads such rows (``DeviceChunkStore`` validates the arrays once instead).
    """
    tokens = _as_tensor(tokens, "tokens")
    doc_offsets = _as_tensor(doc_offsets, "doc_offsets")
    doc_chunks = _as_tensor(doc_chunks, "doc_chunks")
    chunk_doc = _as_tensor(chunk_doc, "chunk_doc")
    _check_store_arrays(tokens, doc_offsets, doc_chunks, chunk_doc)
    if tokens.device.type not in ("cpu", "cuda"):
        raise ValueError(f"tokens: device {tokens.device} is not supported (cpu or cuda)")
    chunk_len, r, pad_id = _check_int(chunk_len, "chunk_len"), _check_int(r, "r"), _check_int(pad_id, "pad_id")
    if isinstance(neighbor_ids, Tensor):
        if neighbor_ids.device != tokens.device:
            raise ValueError(f"neighbor_ids: on {neighbor_ids.device} but the store is on {tokens.device}")
        ids = neighbor_ids
    else:
        a = np.asarray(neighbor_ids)
        if a.size and a.dtype.kind not in "iu":
            raise TypeError(f"neighbor_ids: expected integer ids, got dtype {a.dtype}")
        ids = torch.from_numpy(a.astype(np.int64)).to(tokens.device)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"neighbor_ids: expected integer ids, got dtype {ids.dtype}")
    ids = ids.to(torch.int64)
    return _gather_op(tokens, doc_offsets, doc_chunks, chunk_doc, ids, chunk_len, r, pad_id, bool(continuation),
                      bool(check_ids))


# --- a store resident on a device -------------------------------------------------------------------------
def _validate_structure(doc_offsets: np.ndarray, doc_chunks: np.ndarray, chunk_doc: np.ndarray, num_tokens: int,
                        chunk_len: int) -> None:
    """The arrays' invariants (docs/store.md), checked once so the device gather can trust them."""
    lens = np.diff(doc_offsets)
    if doc_offsets[0] != 0 or doc_offsets[-1] != num_tokens or (lens < 0).any():
        raise ValueError("doc_offsets: corrupt (must rise from 0 to num_tokens)")
    if doc_chunks[0] != 0 or not np.array_equal(np.diff(doc_chunks), -(-lens // chunk_len)):
        raise ValueError("doc_chunks: corrupt (chunk counts do not match document lengths)")
    if doc_chunks[-1] != len(chunk_doc) or not np.array_equal(
        chunk_doc, np.repeat(np.arange(len(doc_offsets) - 1, dtype=np.int64), np.diff(doc_chunks))
    ):
        raise ValueError("chunk_doc: corrupt (does not match doc_chunks)")


def _upload(a: np.ndarray, device: torch.device) -> Tensor:
    """Copy a (possibly memory-mapped, read-only) array to ``device`` in slices (bounded host memory).

    Unsigned tokens travel as their signed bit patterns: torch implements few ops for uint16/uint32.
    """
    src = _as_tensor(a[:0], "array")
    if device.type == "cpu":
        return _as_tensor(a, "array")
    dst = torch.empty(a.shape[0], dtype=src.dtype, device=device)
    signed = {torch.uint16: torch.int16, torch.uint32: torch.int32}.get(src.dtype, src.dtype)
    dst_bits = dst.view(signed)
    for i in range(0, a.shape[0], _UPLOAD_SLICE):
        piece = _as_tensor(a[i : i + _UPLOAD_SLICE], "array")
        dst_bits[i : i + piece.shape[0]].copy_(piece.view(signed))
    return dst


class DeviceChunkStore:
    """A chunk store's arrays as tensors on one device, with the store's ``gather``.

    ``DeviceChunkStore.from_store(store, "cuda")`` uploads a ``pyretro.store.ChunkStore`` (validating the
    arrays once); ``.gather(ids)`` returns the same rows as ``store.gather(ids)`` as device tensors.
    Memory: ``tokens`` at the store's width (2 or 4 bytes/token) plus 8 bytes per document and per chunk.
    """

    def __init__(self, tokens: Tensor, doc_offsets: Tensor, doc_chunks: Tensor, chunk_doc: Tensor, chunk_len: int):
        _check_store_arrays(tokens, doc_offsets, doc_chunks, chunk_doc)
        self.tokens, self.doc_offsets, self.doc_chunks, self.chunk_doc = tokens, doc_offsets, doc_chunks, chunk_doc
        self.chunk_len = _check_int(chunk_len, "chunk_len")

    @classmethod
    def from_arrays(cls, tokens: Any, doc_offsets: Any, doc_chunks: Any, chunk_doc: Any, chunk_len: int,
                    device: str | torch.device = "cuda") -> DeviceChunkStore:
        """Validates numpy/CPU arrays (docs/store.md layout) and places them on ``device``."""
        arrays = [np.asarray(a.cpu().numpy() if isinstance(a, Tensor) else a)
                  for a in (tokens, doc_offsets, doc_chunks, chunk_doc)]
        for name, a in zip(("doc_offsets", "doc_chunks", "chunk_doc"), arrays[1:], strict=True):
            if a.dtype != np.int64 or a.ndim != 1:
                raise TypeError(f"{name}: expected a 1-D int64 array, got {a.dtype} {list(a.shape)}")
        if len(arrays[1]) < 1 or len(arrays[2]) != len(arrays[1]):
            raise ValueError("doc_chunks: expected as many entries as doc_offsets (num_docs + 1 >= 1)")
        chunk_len = _check_int(chunk_len, "chunk_len")
        _validate_structure(arrays[1], arrays[2], arrays[3], arrays[0].shape[0], chunk_len)
        dev = torch.device(device)
        return cls(*(_upload(a, dev) for a in arrays), chunk_len)

    @classmethod
    def from_store(cls, store: Any, device: str | torch.device = "cuda") -> DeviceChunkStore:
        """Uploads an open ``pyretro.store.ChunkStore`` to ``device``."""
        return cls.from_arrays(store.tokens, store.doc_offsets, store.doc_chunks, store.chunk_doc, store.chunk_len,
                               device)

    def to(self, device: str | torch.device) -> DeviceChunkStore:
        dev = torch.device(device)
        if dev == self.device:
            return self
        moved = []
        for t in (self.tokens, self.doc_offsets, self.doc_chunks, self.chunk_doc):
            signed = {torch.uint16: torch.int16, torch.uint32: torch.int32}.get(t.dtype, t.dtype)
            moved.append(t.view(signed).to(dev).view(t.dtype))
        return DeviceChunkStore(*moved, self.chunk_len)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def __len__(self) -> int:
        return int(self.chunk_doc.shape[0])

    @property
    def num_docs(self) -> int:
        return int(self.doc_offsets.shape[0]) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.tokens, self.doc_offsets, self.doc_chunks,
                                                          self.chunk_doc))

    def __repr__(self) -> str:
        return (f"DeviceChunkStore(chunks={len(self)}, docs={self.num_docs}, tokens={self.num_tokens}, "
                f"chunk_len={self.chunk_len}, device={self.device})")

    def gather(
        self,
        neighbor_ids: Any,
        with_continuation: bool = True,
        *,
        r: int | None = None,
        pad_id: int = 0,
        check_ids: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Same rows as ``ChunkStore.gather`` (``r`` defaults to 2*chunk_len, or chunk_len without continuation)."""
        if r is None:
            r = 2 * self.chunk_len if with_continuation else self.chunk_len
        return gather_neighbors(self.tokens, self.doc_offsets, self.doc_chunks, self.chunk_doc, neighbor_ids,
                                self.chunk_len, r, pad_id, continuation=with_continuation, check_ids=check_ids)


__all__ = ["DeviceChunkStore", "gather_neighbors"]
