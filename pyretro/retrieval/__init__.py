"""Retrieval database: embed chunks, build a faiss index, query neighbours with document exclusion.

See docs/retrieval.md. Heavy dependencies (faiss, sentence-transformers, transformers) load lazily.
"""

from __future__ import annotations

from pyretro.retrieval.embed import chunk_texts, embed_store, open_embeddings
from pyretro.retrieval.embedders import (
    Embedder,
    HashingEmbedder,
    HFEncoderEmbedder,
    SentenceTransformerEmbedder,
    make_embedder,
)
from pyretro.retrieval.filter import Exclusion, groups_from_sample_length, keep_first
from pyretro.retrieval.index import (
    auto_factory,
    build_index,
    exact_search,
    load_index,
    merge_shards,
    recall,
    save_index,
    set_search_params,
)
from pyretro.retrieval.query import NeighborTable, Retriever, build_neighbor_table, search_filtered

__all__ = [
    "Embedder", "HashingEmbedder", "HFEncoderEmbedder", "SentenceTransformerEmbedder", "make_embedder",
    "chunk_texts", "embed_store", "open_embeddings",
    "Exclusion", "keep_first", "groups_from_sample_length",
    "auto_factory", "build_index", "load_index", "save_index", "merge_shards", "recall", "exact_search",
    "set_search_params",
    "NeighborTable", "Retriever", "build_neighbor_table", "search_filtered",
]
