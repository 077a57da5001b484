"""The demo's data layer: BPE + three chunk stores (train, database, eval), the retrieval database (hashing
embeddings, faiss index) and the two neighbour tables Retro needs (train -> database with Retro's sample
exclusion, eval -> database), all through the library (``pyretro.data``, ``pyretro.retrieval``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.data.ingest import ingest
from pyretro.data.tokenizer import save_tokenizer, train_bpe
from pyretro.retrieval import (
    HashingEmbedder,
    NeighborTable,
    Retriever,
    build_index,
    build_neighbor_table,
    chunk_texts,
    embed_store,
    groups_from_sample_length,
    open_embeddings,
)
from pyretro.store import ChunkStore

STORES = ("train", "database", "eval")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_stores(corpus_dir: Path, out: Path, vocab_size: int, chunk_len: int, progress: bool) -> dict[str, Any]:
    """BPE trained on the training documents only, then one chunk store per split (same tokenizer)."""
    out.mkdir(parents=True, exist_ok=True)
    train_texts = (d["text"] for d in read_jsonl(corpus_dir / "train.jsonl"))
    tok = train_bpe(train_texts, vocab_size=vocab_size)
    save_tokenizer(tok, out / "tokenizer.json")
    stats: dict[str, Any] = {}
    for name in STORES:
        target = out / name
        rep = ingest(str(corpus_dir / f"{name}.jsonl"), target, tokenizer=tok, chunk_len=chunk_len, num_workers=1,
                     overwrite=True, progress=False, work_dir=out / f".{name}.ingest")
        stats[name] = {"docs": rep.num_docs, "tokens": rep.num_tokens, "chunks": rep.num_chunks}
        if progress:
            print(f"  store {name}: {rep.num_docs} docs, {rep.num_tokens} tokens, {rep.num_chunks} chunks", flush=True)
    return stats


def build_practice_store(corpus_dir: Path, out: Path, chunk_len: int) -> dict[str, int]:
    """The practice people's bursty pairs as a chunk store (the demo's tokenizer), one document per pair."""
    rep = ingest(str(corpus_dir / "practice_pairs.jsonl"), out / "practice", tokenizer=str(out / "tokenizer.json"),
                 chunk_len=chunk_len, num_workers=1, overwrite=True, progress=False, work_dir=out / ".practice.ingest")
    return {"docs": rep.num_docs, "tokens": rep.num_tokens, "chunks": rep.num_chunks}


def build_retrieval(db_dir: Path, corpus_dir: Path, dim: int, seq_len: int, k: int,
                    progress: bool) -> dict[str, Any]:
    """Embeddings of the three stores, a faiss index of the database, the train and eval neighbour tables,
    and how often a held-out chunk's top neighbour is a document of the same entity (retrieval quality)."""
    stores = {n: ChunkStore.open(db_dir / n) for n in STORES}
    db = stores["database"]
    # idf from the database chunks: rare words (names) count, template words do not
    emb = HashingEmbedder(dim, ngram=1).fit(chunk_texts(db, np.arange(len(db))))
    emb.save_idf(db_dir / "idf.npy")  # its spec goes into the index header: Retriever.open rebuilds this embedder
    vecs = {}
    for n, s in stores.items():
        path = embed_store(s, emb, db_dir / f"emb_{n}", overwrite=True, progress=progress)
        vecs[n] = open_embeddings(path, s, emb)[1]
    index, ih = build_index(vecs["database"], db_dir / "index", factory="auto", progress=progress,
                            header={"store_id": db.store_id, "embedder": emb.fingerprint(),
                                    "embedder_spec": emb.spec})
    # query documents -> database documents (for Retro's exclusion of the sample's own documents)
    db_ids = {d["id"]: i for i, d in enumerate(read_jsonl(corpus_dir / "database.jsonl"))}
    train_docs = read_jsonl(corpus_dir / "train.jsonl")
    doc_map = np.array([db_ids.get(d["id"], -1) for d in train_docs], np.int64)
    tr = stores["train"]
    groups = groups_from_sample_length(len(tr), seq_len // tr.chunk_len)
    fp = emb.fingerprint()
    build_neighbor_table(db_dir / "nb_train", index, vecs["train"], tr, db, k=k, doc_map=doc_map, groups=groups,
                         index_header=ih, embedder_fingerprint=fp, overwrite=True, progress=progress)
    build_neighbor_table(db_dir / "nb_eval", index, vecs["eval"], stores["eval"], db, k=k, exclude="none",
                         index_header=ih, embedder_fingerprint=fp, overwrite=True, progress=progress)
    quality = retrieval_quality(db_dir, corpus_dir)
    return {"index": ih.get("factory"), "embedder": f"hashing:{dim} (word unigrams, idf)", **quality}


def retrieval_quality(db_dir: Path, corpus_dir: Path) -> dict[str, float]:
    """Share of chunks whose first (any of the first two) neighbour comes from a document of the same entity."""
    out = {}
    db = ChunkStore.open(db_dir / "database")
    ent_db = np.array([d["entity"] for d in read_jsonl(corpus_dir / "database.jsonl")])
    for split in ("train", "eval"):
        s = ChunkStore.open(db_dir / split)
        ent_q = np.array([d["entity"] for d in read_jsonl(corpus_dir / f"{split}.jsonl")])[np.asarray(s.chunk_doc)]
        nb = np.asarray(NeighborTable.open(db_dir / f"nb_{split}", s, db).neighbors[:, :2])
        same = (nb >= 0) & (ent_db[np.asarray(db.chunk_doc)[np.maximum(nb, 0)]] == ent_q[:, None])
        out[f"{split}_top1_same_entity"] = float(same[:, 0].mean())
        out[f"{split}_top2_any_same_entity"] = float(same.any(1).mean())
    return out


def open_retriever(db_dir: Path) -> Retriever:
    """Online retriever over the database: the embedder comes from the index header, as for any user."""
    return Retriever.open(db_dir / "database", db_dir / "index")
