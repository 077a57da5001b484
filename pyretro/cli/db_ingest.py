"""``pyretro db ingest``: text / JSONL / Megatron files -> a chunk store (see docs/ingest.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="tokenize a corpus into a chunk store (resumable)",
                       description="Tokenize text/JSONL files (or import Megatron .bin/.idx) into a chunk store.")
    p.add_argument("inputs", nargs="+", help="input files, directories or glob patterns")
    p.add_argument("-o", "--out", required=True, help="output store directory")
    p.add_argument("--tokenizer", help="tokenizer.json (or a store/directory holding one); default: train a BPE")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary when training (default 8192)")
    p.add_argument("--format", dest="input_format", default="auto", choices=["auto", "text", "jsonl", "megatron"])
    p.add_argument("--text-mode", default="file", choices=["file", "paragraph", "line"],
                   help="text inputs: one document per file, per blank-line-separated block, or per line")
    p.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--chunk-len", type=int, default=64)
    p.add_argument("--no-eod", dest="append_eod", action="store_false", help="do not append <|eod|> to documents")
    p.add_argument("--workers", type=int, help="tokenizer processes (default: CPU count)")
    p.add_argument("--shard-mb", type=float, default=64.0, help="input megabytes per resumable shard")
    p.add_argument("--train-mb", type=float, default=128.0, help="megabytes of input used to train the BPE")
    p.add_argument("--work-dir", help="where shards are kept until merged (default: .<out>.ingest)")
    p.add_argument("--keep-shards", action="store_true", help="keep the shard stores after merging")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pyretro.data.ingest import ingest

    r = ingest(
        args.inputs, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size, input_format=args.input_format,
        text_mode=args.text_mode, field=args.field, chunk_len=args.chunk_len, append_eod=args.append_eod,
        num_workers=args.workers, shard_bytes=max(1, int(args.shard_mb * 2**20)),
        train_bytes=max(1, int(args.train_mb * 2**20)), work_dir=args.work_dir, keep_shards=args.keep_shards,
        overwrite=args.overwrite, progress=args.progress,
    )
    print(f"{r.path}: {r.num_docs} documents, {r.num_tokens} tokens, {r.num_chunks} chunks "
          f"({r.shards} shards, {r.shards_skipped} reused) in {r.seconds:.1f} s")
    return 0
