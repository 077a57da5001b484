"""``pyretro eval ppl|qa|summarize``: perplexity, zero-shot QA and summarization of saved models (docs/eval.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODES = ("gpt", "retro", "retro-decoder", "retro-retrieve")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, metavar="PATH",
                   help="a model saved by pyretro (.safetensors), a checkpoint directory or a training run directory "
                        "(its latest checkpoint); repeat to compare a GPT and a Retro model")
    p.add_argument("--tokenizer", help="tokenizer.json or a directory holding one (default: the store's)")
    p.add_argument("--data", required=True, help="evaluation data (see docs/eval.md)")
    p.add_argument("--mode", help=f"comma-separated subset of {','.join(MODES)} (default: all the models allow)")
    p.add_argument("--retro-gate", type=float, default=None,
                   help="gate for Retro modes with retrieval (default: the saved gate, 1 if it is 0)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples / samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="directory for results.json, results.md and results.png")
    p.add_argument("--no-plot", action="store_true", help="skip the plot in --out")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _generation(p: argparse.ArgumentParser, max_new: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new)
    p.add_argument("--max-neighbors", type=int, default=5,
                   help="mode retro: at most this many r-token passage pieces per example as neighbours")
    p.add_argument("--system", default=None, help="system text for the chat template")
    p.add_argument("--store", help="mode retro-retrieve: the retrieval store (chunk store directory)")
    p.add_argument("--index", help="mode retro-retrieve: the faiss index directory of --store")
    p.add_argument("--k", type=int, default=None, help="mode retro-retrieve: neighbours per chunk (default: the model's)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate models: perplexity, zero-shot QA, summarization")
    esub = p.add_subparsers(dest="eval_command", metavar="TASK")

    pp = esub.add_parser("ppl", help="perplexity on a chunk store, with / without retrieval, leakage-filtered")
    _common(pp)
    pp.add_argument("--neighbors", help="neighbour table of --data (needed for mode retro and the leakage subsets)")
    pp.add_argument("--db-store", help="the database store the neighbour table points into (default: --data)")
    pp.add_argument("--seq-len", type=int, required=True, help="tokens per sample (a multiple of chunk_len)")
    pp.add_argument("--k", type=int, default=2, help="neighbours per chunk")
    pp.add_argument("--min-overlap", type=int, default=8, help="leakage: shared run of tokens that marks a chunk")
    pp.set_defaults(func=run_ppl)

    pq = esub.add_parser("qa", help="zero-shot QA (EM / F1) from a JSONL file")
    _common(pq)
    _generation(pq, 32)
    pq.add_argument("--documents", help="JSONL {id, text} resolving 'context_ids' (a synthetic corpus' documents)")
    pq.add_argument("--max-context", type=int, default=5, help="passages per prompt")
    pq.add_argument("--passage-words", type=int, default=100, help="passage size when a 'document' is chunked")
    pq.add_argument("--embedder", default="hashing:1024", help="embedder that ranks passages of a 'document'")
    pq.add_argument("--closed-book", action="store_true",
                    help="no passages in the prompt (mode retro still gives them to the encoder)")
    pq.set_defaults(func=run_qa)

    ps = esub.add_parser("summarize", help="summarization (ROUGE-1/2/L, geometric mean) from a JSONL file")
    _common(ps)
    _generation(ps, 256)
    ps.add_argument("--instruction", default=None, help="the question put after the document")
    ps.set_defaults(func=run_summarize)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _load_models(paths: list[str], device: str) -> dict:
    from pyretro.model import RetroModel
    from pyretro.model.io import load
    from pyretro.train.models import resolve_model_file

    models: dict = {}
    for given in paths:
        path = str(resolve_model_file(given, "--model"))
        m = load(path, device=device).eval()
        kind = "retro" if isinstance(m, RetroModel) else "gpt"
        if kind in models:
            raise ValueError(f"--model: two {kind} models given ({models[kind + '_path']} and {path}); give at most "
                             "one GPT and one Retro")
        models[kind], models[kind + "_path"] = m, path
    return models


def _modes(args: argparse.Namespace, models: dict, allowed: tuple[str, ...]) -> list[str]:
    if args.mode:
        modes = [m.strip() for m in args.mode.split(",") if m.strip()]
        bad = [m for m in modes if m not in allowed]
        if bad:
            raise ValueError(f"--mode: unknown or unsupported here: {', '.join(bad)} (choose from {', '.join(allowed)})")
        for m in modes:
            kind = "gpt" if m == "gpt" else "retro"
            if kind not in models:
                raise ValueError(f"--mode {m} needs a {'GPT' if kind == 'gpt' else 'Retro'} model among --model")
        return modes
    modes = (["gpt"] if "gpt" in models else []) + (["retro", "retro-decoder"] if "retro" in models else [])
    if "retro" in models and "retro-retrieve" in allowed and getattr(args, "index", None):
        modes.append("retro-retrieve")
    return modes


def _tokenizer(args: argparse.Namespace):
    from pyretro.data.tokenizer import load_tokenizer

    src = args.tokenizer or getattr(args, "store", None)
    if src is None:
        raise ValueError("--tokenizer is required (tokenizer.json, or a store directory holding one)")
    return load_tokenizer(src)


def _retriever(args: argparse.Namespace, modes: list[str]):
    if "retro-retrieve" not in modes:
        return None
    if not args.store or not args.index:
        raise ValueError("mode retro-retrieve needs --store and --index")
    from pyretro.retrieval import Retriever

    return Retriever.open(args.store, args.index)


def _finish(args: argparse.Namespace, results: list, title: str) -> int:
    from pyretro.eval.report import print_table, write_report

    paths = {}
    if args.out:
        paths = write_report(args.out, results, title=title, plot=not args.no_plot)
    if args.json:
        rows = []
        for r in results:
            d = r.to_dict()
            d.pop("predictions", None)
            rows.append(d)
        print(json.dumps({"results": rows, "files": {k: str(v) for k, v in paths.items()}}, indent=2, default=str))
    else:
        print_table(results)
        for kind, path in paths.items():
            print(f"{kind}: {path}")
    return 0


def run_ppl(args: argparse.Namespace) -> int:
    from pyretro.eval.perplexity import evaluate_perplexity
    from pyretro.train.data import RetroDataset

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data: no such chunk store directory: {args.data}")
    models = _load_models(args.model, args.device)
    modes = _modes(args, models, ("gpt", "retro", "retro-decoder"))
    if "retro" in modes and not args.neighbors:
        if args.mode:
            raise ValueError("--mode retro needs --neighbors (a neighbour table of --data)")
        modes.remove("retro")
    vocab = min(m.config.vocab_size for k, m in models.items() if not k.endswith("_path"))
    retro = models.get("retro")
    # neighbours as long as the Retro model was trained with (it would silently accept any r)
    r = retro.retro.r if retro is not None else None
    ds = RetroDataset(args.data, args.neighbors, seq_len=args.seq_len, db_store=args.db_store, k=args.k, r=r,
                      vocab_size=vocab)
    if retro is not None and ds.chunk_len != retro.retro.chunk_len:
        raise ValueError(f"--data: the store's chunk_len {ds.chunk_len} is not the Retro model's "
                         f"{retro.retro.chunk_len}")
    if args.tokenizer:
        _check_store_tokenizer(args.tokenizer, ds)
    results = []
    for mode in modes:
        model = models["gpt" if mode == "gpt" else "retro"]
        results.append(evaluate_perplexity(model, ds, batch_size=args.batch_size, retrieval=mode != "retro-decoder",
                                           retro_gate=args.retro_gate, min_overlap=args.min_overlap,
                                           max_samples=args.limit, progress=not args.quiet, mode=mode))
    return _finish(args, results, f"Perplexity on {args.data}")


def _check_store_tokenizer(tokenizer_path: str, ds) -> None:
    from pyretro.data.tokenizer import fingerprint, load_tokenizer
    from pyretro.errors import MismatchError

    fp = ds.store.tokenizer_fingerprint
    if fp and fp != fingerprint(load_tokenizer(tokenizer_path)):
        raise MismatchError(f"--tokenizer {tokenizer_path} is not the tokenizer of the store {ds.store.path}")


def _limit(examples: list, limit: int | None) -> list:
    return examples if limit is None else examples[: max(0, limit)]


def run_qa(args: argparse.Namespace) -> int:
    from pyretro.eval.data import load_qa_jsonl
    from pyretro.eval.qa import evaluate_qa_modes

    examples = _limit(load_qa_jsonl(args.data, documents=args.documents), args.limit)
    if not examples:
        raise ValueError("--limit leaves no examples")
    tok = _tokenizer(args)
    models = _load_models(args.model, args.device)
    modes = _modes(args, models, MODES)
    res = evaluate_qa_modes(
        {k: v for k, v in models.items() if not k.endswith("_path")}, tok, examples, modes=modes,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_context=args.max_context,
        passage_words=args.passage_words, embedder=args.embedder, max_neighbors=args.max_neighbors,
        retriever=_retriever(args, modes), num_neighbors=args.k, retro_gate=args.retro_gate, system=args.system,
        prompt_context=not args.closed_book, progress=not args.quiet,
    )
    return _finish(args, list(res.values()), f"Zero-shot QA on {args.data}")


def run_summarize(args: argparse.Namespace) -> int:
    from pyretro.eval.data import load_summarization_jsonl
    from pyretro.eval.metrics import _scorer
    from pyretro.eval.summarization import DEFAULT_INSTRUCTION, evaluate_summarization_modes

    try:
        _scorer()  # a missing rouge-score fails before any model is loaded
    except ImportError as e:
        print(f"pyretro eval: error: {e}", file=sys.stderr)
        return 1
    examples = _limit(load_summarization_jsonl(args.data), args.limit)
    if not examples:
        raise ValueError("--limit leaves no examples")
    tok = _tokenizer(args)
    models = _load_models(args.model, args.device)
    modes = _modes(args, models, MODES)
    res = evaluate_summarization_modes(
        {k: v for k, v in models.items() if not k.endswith("_path")}, tok, examples, modes=modes,
        instruction=args.instruction or DEFAULT_INSTRUCTION, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, max_neighbors=args.max_neighbors, retriever=_retriever(args, modes),
        num_neighbors=args.k, retro_gate=args.retro_gate, system=args.system, progress=not args.quiet,
    )
    return _finish(args, list(res.values()), f"Summarization on {args.data}")


if __name__ == "__main__":  # pragma: no cover
    from pyretro.cli.main import main

    sys.exit(main(["eval", *sys.argv[1:]]))
