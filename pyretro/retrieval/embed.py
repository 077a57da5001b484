"""Embed every chunk of a store into ``DIR/data.npy`` (float32 [num_chunks, dim]), resumable and distributed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pyretro.errors import ConfigError, MismatchError
from pyretro.retrieval.blocks import BlockArray, open_block_array
from pyretro.retrieval.dist import my_blocks, rank_world
from pyretro.retrieval.embedders import Embedder, HashingEmbedder

KIND = "embeddings"


def chunk_spans(store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized (start, end) token offsets of chunk ``ids`` (chunks never cross a document end)."""
    ids = np.asarray(ids, dtype=np.int64)
    d = np.asarray(store.chunk_doc[ids], dtype=np.int64)
    start = np.asarray(store.doc_offsets[d]) + (ids - np.asarray(store.doc_chunks[d])) * store.chunk_len
    end = np.minimum(start + store.chunk_len, np.asarray(store.doc_offsets[d + 1]))
    return start, end


def chunk_texts(store, ids: np.ndarray, need_text: bool = False) -> list[str]:
    """Detokenized chunk texts. A store without a tokenizer gives ``"t12 t7 ..."`` (token ids as words),
    which only the hashing embedder can use meaningfully (``need_text`` makes that an error)."""
    start, end = chunk_spans(store, ids)
    toks = [store.tokens[s:e].tolist() for s, e in zip(start.tolist(), end.tolist(), strict=True)]
    tok = store.tokenizer
    if tok is None:
        if need_text:
            raise ConfigError(f"{store.path}: the store has no tokenizer; a neural embedder needs text "
                              "(use the hashing embedder, or build the store with a tokenizer)")
        return [" ".join(f"t{t}" for t in row) for row in toks]
    return tok.decode_batch(toks, skip_special_tokens=True)


def _embed_sorted(embedder: Embedder, texts: list[str], batch_size: int) -> np.ndarray:
    """Embeds in length-sorted batches (less padding for neural embedders), rows back in input order."""
    out = np.empty((len(texts), embedder.dim), np.float32)
    order = np.argsort(np.fromiter((len(t) for t in texts), np.int64, len(texts)), kind="stable")
    for s in range(0, len(texts), batch_size):
        idx = order[s : s + batch_size]
        e = np.asarray(embedder.embed([texts[i] for i in idx]), dtype=np.float32)
        if e.shape != (len(idx), embedder.dim):
            raise MismatchError(f"embedder {embedder.name} returned shape {e.shape}, expected {(len(idx), embedder.dim)}")
        out[idx] = e
    return out


def embed_store(store, embedder: Embedder, out: str | os.PathLike, *, block_size: int = 16384,
                batch_size: int = 256, overwrite: bool = False, progress: bool = True,
                rebuild_stale: bool = False) -> Path:
    """Embeds all chunks of ``store`` into ``out`` (a directory). Resumes an interrupted run with the same
    settings; under torch.distributed each rank embeds blocks rank, rank+world, ... Returns ``out``."""
    n = len(store)
    settings = {"store_id": store.store_id, "embedder": embedder.fingerprint(),
                "embedder_spec": getattr(embedder, "spec", None)}
    arr = BlockArray(out, KIND, (n, embedder.dim), np.float32, block_size, settings, overwrite=overwrite,
                     rebuild_stale=rebuild_stale)
    todo = arr.pending(my_blocks(arr.num_blocks))
    need_text = not isinstance(embedder, HashingEmbedder)
    rank, _ = rank_world()
    with tqdm(total=len(todo), desc=f"embed[{rank}]", unit="block", disable=not progress) as bar:
        for b in todo:
            lo, hi = arr.rows(b)
            texts = chunk_texts(store, np.arange(lo, hi), need_text=need_text)
            arr.commit(b, _embed_sorted(embedder, texts, batch_size))
            bar.update(1)
    arr.finish()
    return Path(out)


def open_embeddings(path: str | os.PathLike, store=None, embedder: Embedder | None = None) -> tuple[dict, np.ndarray]:
    """(header, mmap float32 [N, dim]); checks it belongs to ``store`` and matches ``embedder``'s dim."""
    header, arr = open_block_array(path, KIND)
    if store is not None and header["store_id"] != store.store_id:
        raise MismatchError(f"{path}: embeddings of store {header['store_id']}, not of {store.path} ({store.store_id})")
    if embedder is not None and arr.shape[1] != embedder.dim:
        raise MismatchError(f"{path}: embeddings have dim {arr.shape[1]}, the embedder {embedder.name} has dim {embedder.dim}")
    return header, arr
