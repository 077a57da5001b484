"""Neighbour tables (offline, every chunk of a training store) and the online ``Retriever``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pyretro.errors import ConfigError, MismatchError
from pyretro.retrieval.blocks import BlockArray, open_block_array
from pyretro.retrieval.dist import my_blocks, rank_world
from pyretro.retrieval.filter import Exclusion, keep_first

KIND = "neighbors"
MAX_SEARCH = 2048  # widest candidate list tried for rows whose candidates were mostly excluded


def _sha1(a: np.ndarray | None) -> str | None:
    return None if a is None else hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def default_k_search(k: int) -> int:
    return max(2 * k, k + 16, 32)


def search_filtered(index, queries: np.ndarray, query_ids: np.ndarray, exclusion: Exclusion, k: int,
                    k_search: int, max_search: int = MAX_SEARCH) -> np.ndarray:
    """Top-``k_search`` search, exclusion filter, first ``k`` kept (-1 padded). Rows left short while their
    candidate list was full are searched again with 4x more candidates (up to ``max_search`` / ntotal)."""
    ntotal = int(index.ntotal)
    ks = max(k, min(int(k_search), ntotal))
    _, cand = index.search(np.ascontiguousarray(queries, dtype=np.float32), ks)
    out = keep_first(cand, exclusion.excluded(query_ids, cand), k)
    while True:
        short = ((out < 0).any(1)) & (cand[:, -1] >= 0)  # short, yet more candidates may exist
        if not short.any() or ks >= min(ntotal, max_search):
            return out
        rows_short = np.flatnonzero(short)
        ks = min(4 * ks, ntotal, max_search)
        _, c2 = index.search(np.ascontiguousarray(queries[rows_short], dtype=np.float32), ks)
        out[rows_short] = keep_first(c2, exclusion.excluded(query_ids[rows_short], c2), k)
        cand = np.full((len(out), ks), -1, np.int64)
        cand[rows_short] = c2


def build_neighbor_table(out: str | os.PathLike, index, query_embeddings: np.ndarray, query_store,
                         db_store=None, *, k: int = 20, k_search: int | None = None, exclude: str = "doc",
                         groups: np.ndarray | None = None, doc_map: np.ndarray | None = None,
                         block_size: int = 65536, index_header: dict | None = None,
                         embedder_fingerprint: dict | None = None, overwrite: bool = False,
                         progress: bool = True, rebuild_stale: bool = False) -> Path:
    """Neighbour table for every chunk of ``query_store``: ``out/data.npy`` int64 [num_chunks, k] + header.

    ``db_store`` defaults to ``query_store`` (Retro's usual setup). Across different stores, exclusion
    needs ``doc_map`` (query doc -> db doc) or ``exclude="none"``. Resumable and rank-distributed.
    """
    db_store = query_store if db_store is None else db_store
    n = len(query_store)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if query_embeddings.shape[0] != n:
        raise MismatchError(f"query embeddings have {query_embeddings.shape[0]} rows, the query store has {n} chunks")
    if query_embeddings.shape[1] != index.d:
        raise MismatchError(f"query embeddings have dim {query_embeddings.shape[1]}, the index has dim {index.d}")
    if index.ntotal != len(db_store):
        raise MismatchError(f"the index holds {index.ntotal} vectors, the database store has {len(db_store)} chunks")
    if index_header and index_header.get("store_id") not in (None, db_store.store_id):
        raise MismatchError(f"the index was built for store {index_header['store_id']}, not {db_store.store_id}")
    same = query_store.store_id == db_store.store_id
    if exclude == "doc" and not same and doc_map is None:
        raise ConfigError("query and database stores differ: pass doc_map (query doc -> db doc) or exclude='none'")
    k_search = default_k_search(k) if k_search is None else int(k_search)
    exclusion = Exclusion(query_store.chunk_doc, db_store.chunk_doc, mode=exclude, groups=groups,
                          doc_map=doc_map, db_num_docs=db_store.num_docs)
    ih = index_header or {}
    settings = {
        "query_store_id": query_store.store_id, "db_store_id": db_store.store_id,
        "index": {key: ih.get(key) for key in ("factory", "ntotal", "dim", "nprobe", "efSearch", "store_id")},
        "embedder": embedder_fingerprint, "k_search": k_search, "exclude": exclude,
        "groups_sha1": _sha1(groups), "doc_map_sha1": _sha1(doc_map),
    }
    arr = BlockArray(out, KIND, (n, k), np.int64, block_size, settings, overwrite=overwrite, fill=-1,
                     rebuild_stale=rebuild_stale)
    todo = arr.pending(my_blocks(arr.num_blocks))
    rank, _ = rank_world()
    for b in tqdm(todo, desc=f"query[{rank}]", unit="block", disable=not progress):
        lo, hi = arr.rows(b)
        ids = np.arange(lo, hi, dtype=np.int64)
        arr.commit(b, search_filtered(index, query_embeddings[lo:hi], ids, exclusion, k, k_search))
    arr.finish()
    return Path(out)


class NeighborTable:
    """A finished neighbour table: ``.neighbors`` (mmap int64 [num_chunks, k_saved], -1 = none), ``.header``."""

    def __init__(self, path: str | os.PathLike, query_store=None, db_store=None):
        self.path = Path(path)
        self.header, self.neighbors = open_block_array(self.path, KIND)
        for store, key, what in ((query_store, "query_store_id", "query"), (db_store, "db_store_id", "database")):
            if store is not None and store.store_id != self.header[key]:
                raise MismatchError(f"{self.path}: neighbour table of {what} store {self.header[key]}, "
                                    f"not of {store.path} ({store.store_id})")
        if query_store is not None and len(query_store) != self.neighbors.shape[0]:
            raise MismatchError(f"{self.path}: {self.neighbors.shape[0]} rows, the store has {len(query_store)} chunks")

    @classmethod
    def open(cls, path: str | os.PathLike, query_store=None, db_store=None) -> NeighborTable:
        return cls(path, query_store, db_store)

    @property
    def k_saved(self) -> int:
        return int(self.neighbors.shape[1])

    def __len__(self) -> int:
        return int(self.neighbors.shape[0])

    def get(self, chunk_ids, k: int = 2) -> np.ndarray:
        """Neighbour ids [..., k] of ``chunk_ids`` (the first k saved)."""
        if not 1 <= k <= self.k_saved:
            raise ConfigError(f"k must be in [1, {self.k_saved}] (neighbours saved), got {k}")
        return np.asarray(self.neighbors[np.asarray(chunk_ids, dtype=np.int64), :k])


class Retriever:
    """Online retrieval for generation and evaluation: token chunks or text -> neighbour ids / tokens."""

    def __init__(self, store, index, embedder, *, nprobe: int | None = None, efSearch: int | None = None,
                 k_search: int | None = None):
        from pyretro.retrieval.index import set_search_params

        if embedder.dim != index.d:
            raise MismatchError(f"embedder {embedder.name} has dim {embedder.dim}, the index has dim {index.d}")
        if index.ntotal != len(store):
            raise MismatchError(f"the index holds {index.ntotal} vectors, the store has {len(store)} chunks")
        self.store, self.index, self.embedder, self.k_search = store, index, embedder, k_search
        if nprobe is not None or efSearch is not None:
            set_search_params(index, nprobe, efSearch)

    @classmethod
    def open(cls, store_path, index_path, embedder=None, **kwargs) -> Retriever:
        """From a store directory and an index directory; the embedder defaults to the one the index header
        records (``embedder_spec``)."""
        from pyretro.retrieval.embedders import make_embedder
        from pyretro.retrieval.index import load_index
        from pyretro.store import ChunkStore

        store = ChunkStore.open(store_path)
        index, header = load_index(index_path)
        if header.get("store_id") not in (None, store.store_id):
            raise MismatchError(f"{index_path}: index of store {header['store_id']}, not of {store_path} ({store.store_id})")
        if embedder is None:
            spec = header.get("embedder_spec")
            if not spec:
                raise ConfigError(f"{index_path}: header records no embedder_spec; pass embedder=")
            embedder = make_embedder(_relocated_idf(spec, Path(index_path)))
        elif isinstance(embedder, str):
            embedder = make_embedder(embedder)
        fp = header.get("embedder")
        if fp and fp != embedder.fingerprint():
            raise MismatchError(f"{index_path}: built with embedder {fp}, given {embedder.fingerprint()}")
        return cls(store, index, embedder, **kwargs)

    def _texts(self, chunks) -> list[str]:
        if isinstance(chunks, str):
            raise TypeError("chunks: pass a list of strings or token chunks, not one string")
        items = list(chunks)
        if all(isinstance(c, str) for c in items):
            return items
        tok = self.store.tokenizer
        rows = [np.asarray(c).tolist() for c in items]
        if tok is None:
            return [" ".join(f"t{t}" for t in r) for r in rows]
        return tok.decode_batch(rows, skip_special_tokens=True)

    def query_chunks(self, chunks, k: int = 2, exclude_docs=None) -> np.ndarray:
        """Neighbour chunk ids int64 [n, k] (-1 padded). ``exclude_docs``: None, one database doc id per
        chunk (int array [n], -1 = none) or one iterable of doc ids per chunk."""
        texts = self._texts(chunks)
        n = len(texts)
        if n == 0:
            return np.zeros((0, k), np.int64)
        q = self.embedder.embed(texts)
        ids = np.arange(n, dtype=np.int64)
        if exclude_docs is None:
            excl = Exclusion(np.zeros(n, np.int64), self.store.chunk_doc, mode="none")
        else:
            first = next(iter(exclude_docs), None) if not isinstance(exclude_docs, np.ndarray) else None
            if isinstance(exclude_docs, np.ndarray) or np.isscalar(first) or first is None:
                docs = np.asarray(exclude_docs, dtype=np.int64).reshape(-1)
                if docs.shape != (n,):
                    raise MismatchError(f"exclude_docs: expected {n} doc ids, got shape {docs.shape}")
                excl = Exclusion(ids, self.store.chunk_doc, doc_map=docs, db_num_docs=self.store.num_docs)
            else:
                sets = [list(s) for s in exclude_docs]
                if len(sets) != n:
                    raise MismatchError(f"exclude_docs: expected {n} sets, got {len(sets)}")
                rows = np.repeat(ids, [len(s) for s in sets])
                docs = np.array([d for s in sets for d in s], dtype=np.int64)
                excl = Exclusion.from_pairs(rows, docs, n, self.store.chunk_doc, self.store.num_docs)
        return search_filtered(self.index, q, ids, excl, k, self.k_search or default_k_search(k))

    def neighbors(self, chunks, k: int = 2, exclude_docs=None, with_continuation: bool = True):
        """(ids [n, k], tokens [n, k, r], mask [n, k, r]) with tokens gathered from the store."""
        ids = self.query_chunks(chunks, k, exclude_docs)
        tokens, mask = self.store.gather(ids, with_continuation=with_continuation)
        return ids, tokens, mask


def _relocated_idf(spec: str, index_dir: Path) -> str:
    """A hashing spec whose ``idf=PATH`` no longer exists (the database directory was moved or copied) points at
    the file of the same name in the index directory or beside it, where one is; the embedder fingerprint
    (the idf's hash) still guards against a wrong file."""
    head, sep, rest = spec.partition("idf=")
    if not sep:
        return spec
    path, comma, tail = rest.partition(",")
    if Path(path).is_file():
        return spec
    for cand in (index_dir / Path(path).name, index_dir.parent / Path(path).name):
        if cand.is_file():
            return f"{head}idf={cand}{comma}{tail}"
    return spec
