"""Retro's exclusion rule, vectorized: drop candidate neighbours from excluded documents, keep the first k.

Each query chunk i has a set of excluded database documents:
- default: the database document of its own document (same store: the chunk's own document);
- with ``groups`` (chunk -> training sample id): the documents of every chunk of the same sample;
- across stores: query documents are mapped to database documents with ``doc_map`` (-1 = no counterpart);
- ``mode="none"``: nothing is excluded.
"""

from __future__ import annotations

import numpy as np

from pyretro.errors import ConfigError, MismatchError


class Exclusion:
    """Excluded-document test for (query chunk, candidate database chunk) pairs."""

    def __init__(self, query_chunk_doc: np.ndarray, db_chunk_doc: np.ndarray, *, mode: str = "doc",
                 groups: np.ndarray | None = None, doc_map: np.ndarray | None = None, db_num_docs: int | None = None):
        if mode not in ("doc", "none"):
            raise ConfigError(f"exclusion mode must be 'doc' or 'none', got {mode!r}")
        self.mode = mode
        self.db_chunk_doc = db_chunk_doc
        n = len(query_chunk_doc)
        if mode == "none":
            return
        qdoc = np.asarray(query_chunk_doc, dtype=np.int64)
        if doc_map is not None:
            doc_map = np.asarray(doc_map, dtype=np.int64)
            if qdoc.size and int(qdoc.max()) >= len(doc_map):
                raise MismatchError(f"doc_map has {len(doc_map)} entries but the query store has document "
                                    f"{int(qdoc.max())}")
            qdoc = doc_map[qdoc]  # -1: no database counterpart, nothing to exclude
        self.excluded_doc = qdoc  # [n] database doc excluded for each query chunk (-1: none)
        self.keys = None
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise MismatchError(f"groups: expected one sample id per query chunk ({n}), got shape {groups.shape}")
            _, self.group = np.unique(groups, return_inverse=True)
            self.group = self.group.astype(np.int64).reshape(-1)
            nd = int(db_num_docs if db_num_docs is not None else (int(np.max(db_chunk_doc)) + 1 if len(db_chunk_doc) else 1))
            self.stride = max(nd, 1)
            ok = qdoc >= 0
            # sorted (sample, db doc) pairs: a candidate is excluded if its pair is present
            self.keys = np.unique(self.group[ok] * self.stride + qdoc[ok])

    @classmethod
    def from_pairs(cls, rows: np.ndarray, docs: np.ndarray, n: int, db_chunk_doc: np.ndarray,
                   db_num_docs: int) -> Exclusion:
        """Arbitrary per-row sets: row ``rows[j]`` (of ``n`` query rows) excludes database doc ``docs[j]``."""
        self = cls.__new__(cls)
        self.mode, self.db_chunk_doc, self.excluded_doc = "doc", db_chunk_doc, None
        self.group, self.stride = np.arange(n, dtype=np.int64), max(int(db_num_docs), 1)
        rows, docs = np.asarray(rows, np.int64), np.asarray(docs, np.int64)
        ok = docs >= 0
        self.keys = np.unique(rows[ok] * self.stride + docs[ok])
        return self

    def excluded(self, query_ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """bool [B, K]: True where candidate (database chunk id, -1 = none) is excluded for its query row."""
        if self.mode == "none":
            return np.zeros(candidates.shape, dtype=bool)
        valid = candidates >= 0
        cdoc = np.asarray(self.db_chunk_doc)[np.where(valid, candidates, 0)].astype(np.int64, copy=False)
        if self.keys is None:
            ex = cdoc == self.excluded_doc[query_ids][:, None]
        else:
            key = self.group[query_ids][:, None] * self.stride + cdoc
            pos = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
            ex = self.keys[pos] == key if len(self.keys) else np.zeros(key.shape, bool)
        return ex & valid


def keep_first(candidates: np.ndarray, drop: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` candidates per row that are not dropped (and not -1), in order; -1 padding. int64 [B, k]."""
    keep = (candidates >= 0) & ~drop
    rank = np.cumsum(keep, axis=1) - 1
    sel = keep & (rank < k)
    out = np.full((candidates.shape[0], k), -1, dtype=np.int64)
    rows, cols = np.nonzero(sel)
    out[rows, rank[rows, cols]] = candidates[rows, cols]
    return out


def groups_from_sample_length(num_chunks: int, chunks_per_sample: int) -> np.ndarray:
    """Sample id of each chunk when training samples are consecutive runs of ``chunks_per_sample`` chunks
    (seq_len / chunk_len, e.g. 2048 / 64 = 32)."""
    if chunks_per_sample < 1:
        raise ConfigError(f"chunks_per_sample must be >= 1, got {chunks_per_sample}")
    return np.arange(num_chunks, dtype=np.int64) // int(chunks_per_sample)
