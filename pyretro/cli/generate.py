"""``pyretro generate``: sample text from a saved GPT or Retro model, with Retro's re-retrieval (docs/model.md).

Where a Retro model's neighbours come from: ``--store/--index`` retrieves them for every chunk the running
text completes (prompt chunks included), the way Retro samples; ``--chat --context`` gives the passages as
the neighbours of every chunk (how InstructRetro evaluates); otherwise the decoder runs alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

MAX_PASSAGE_PIECES = 5  # --chat passages as neighbours: at most this many r-token pieces (as `pyretro eval qa`)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample text from a saved model (Retro: re-retrieval at every chunk)")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a .safetensors model, a checkpoint directory or a training run directory")
    p.add_argument("--prompt", action="append", default=[], help="prompt text; repeat for a batch")
    p.add_argument("--prompts", metavar="FILE",
                   help="more prompts: a .jsonl ({'prompt'} or {'question', 'context'?} records) or text, one per line")
    p.add_argument("--tokenizer", help="tokenizer.json or a directory holding one (default: --store's)")
    p.add_argument("--chat", action="store_true",
                   help="wrap each prompt in the instruction-tuning chat template (as a question)")
    p.add_argument("--context", action="append", default=[], help="--chat: a passage for the prompt; repeat")
    p.add_argument("--system", default=None, help="--chat: system text")
    p.add_argument("--store", help="Retro: the retrieval database (chunk store) to re-retrieve from")
    p.add_argument("--index", help="Retro: the faiss index directory of --store")
    p.add_argument("--k", type=int, default=None, help="Retro: neighbours per chunk (default: the model's)")
    p.add_argument("--no-retrieval", action="store_true", help="Retro: the decoder alone (encoder ablated)")
    p.add_argument("--gate", type=float, default=None,
                   help="Retro: CCA gate while retrieving (default: the saved gate, 1 if it is 0)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed: prompt i samples with seed + i, one prompt at a time")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence at every step")
    p.add_argument("--show-neighbors", action="store_true",
                   help="Retro with --store: print the chunks retrieved for each completed chunk (one prompt "
                        "at a time, cached path)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON records instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown for more than one batch)")
    p.set_defaults(func=run)


def _read_prompts(args: argparse.Namespace) -> list[dict[str, Any]]:
    items = [{"prompt": t, "context": list(args.context)} for t in args.prompt]
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts: no such file: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from e
                text = rec.get("prompt", rec.get("question")) if isinstance(rec, dict) else None
                if not isinstance(text, str) or not text:
                    raise ValueError(f"{path}:{n}: expected a 'prompt' or 'question' string")
                ctx = rec.get("context") or list(args.context)
                ctx = [ctx] if isinstance(ctx, str) else ctx
                if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
                    raise ValueError(f"{path}:{n}: 'context' must be a string or a list of strings")
                items.append({"prompt": text, "context": ctx})
            else:
                items.append({"prompt": line, "context": list(args.context)})
    if not items:
        raise ValueError("give at least one --prompt or a --prompts file")
    if not args.chat and any(it["context"] for it in items):
        raise ValueError("prompts with 'context' passages need --chat (the passages go into the chat template)")
    return items


def _check_args(args: argparse.Namespace, is_retro: bool) -> None:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if bool(args.store) != bool(args.index):
        raise ValueError("--store and --index go together (re-retrieval needs both)")
    if args.context and not args.chat:
        raise ValueError("--context needs --chat (passages go into the chat template's prompt)")
    if not is_retro and (args.store or args.k or args.no_retrieval or args.gate is not None or args.show_neighbors):
        raise ValueError("--store/--index/--k/--no-retrieval/--gate/--show-neighbors need a Retro model; "
                         "--model is a GPT")
    if args.show_neighbors and not args.store:
        raise ValueError("--show-neighbors needs --store and --index (it prints what re-retrieval found)")
    if args.show_neighbors and args.no_cache:
        raise ValueError("--show-neighbors reads the cached path's retrievals (one per chunk); drop --no-cache, "
                         "which gives the same tokens")
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from pyretro.data.chat import ChatTemplate
    from pyretro.eval import gate_for_eval
    from pyretro.eval.generation import check_vocab, passage_neighbors, retriever_fn
    from pyretro.model import RetroModel
    from pyretro.model.generate import generate
    from pyretro.model.io import load
    from pyretro.train.models import resolve_model_file

    path = resolve_model_file(args.model, "--model")
    model = load(path, device=args.device).eval()
    is_retro = isinstance(model, RetroModel)
    _check_args(args, is_retro)
    items = _read_prompts(args)
    if args.tokenizer is None and args.store is None:
        raise ValueError("--tokenizer is required (tokenizer.json, or a store directory holding one)")
    tok = check_vocab(model, args.tokenizer or args.store)
    template = ChatTemplate(tok)
    if args.chat:
        stops = template.stop_ids()
        ids = [template.encode_prompt(it["prompt"], it["context"], args.system) for it in items]
    else:
        stops = [template.eod_id] if template.eod_id is not None else []
        ids = [tok.encode(it["prompt"], add_special_tokens=False).ids for it in items]
    for it, i in zip(items, ids, strict=True):
        if not i:
            raise ValueError(f"prompt {it['prompt']!r} has no tokens")

    source, log = "none", []
    rfn = None
    if is_retro and not args.no_retrieval and args.store:
        from pyretro.retrieval import Retriever

        retriever = Retriever.open(args.store, args.index)
        k = args.k or model.retro.num_neighbors
        base = retriever_fn(retriever, k, tok, model.retro.r)

        def rfn(chunk_tokens):
            out = base(chunk_tokens)
            if args.show_neighbors:  # batch of 1, cached path: one call per completed chunk, in order
                log.append((chunk_tokens[0].tolist(), out[0][0].tolist(), out[1][0].tolist()))
            return out
        source = f"re-retrieved from {args.store} (k={k})"
    elif is_retro and not args.no_retrieval and args.chat and any(it["context"] for it in items):
        source = "the --chat passages, for every chunk"
    if is_retro:
        print(f"pyretro generate: Retro neighbours: {source if source != 'none' else 'none (decoder alone)'}",
              file=sys.stderr)

    # sampling runs one prompt at a time with its own generator (seed + its index), so a prompt's sample does
    # not depend on --batch-size, --show-neighbors or the other prompts
    sampling = args.temperature > 0
    bs = 1 if args.show_neighbors or sampling else args.batch_size
    records = []
    with gate_for_eval(model, args.gate) if is_retro and source != "none" else nullcontext():
        starts = range(0, len(items), bs)
        for s in tqdm(starts, desc="generate", unit="batch", disable=len(starts) <= 1 or args.quiet):
            rows = list(range(s, min(s + bs, len(items))))
            kw: dict[str, Any] = {}
            if rfn is not None:
                kw["retriever"] = rfn
            elif is_retro and source != "none":
                nb, nm = passage_neighbors(tok, [items[i]["context"] for i in rows], model.retro.r,
                                           MAX_PASSAGE_PIECES)
                kw.update(neighbors=nb.to(args.device), neighbor_mask=nm.to(args.device))
            elif is_retro:
                kw["retrieval"] = False
            log.clear()
            new = generate(model, [ids[i] for i in rows], max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, stop_tokens=stops,
                           pad_id=template.pad_id, use_cache=not args.no_cache,
                           generator=torch.Generator(device=args.device).manual_seed(args.seed + s), **kw)
            for i, toks in zip(rows, new, strict=True):
                text = tok.decode(list(toks))
                if args.chat:  # an answer follows its marker after one space (pyretro.data.chat)
                    text = text.removeprefix(" ")
                rec: dict[str, Any] = {"prompt": items[i]["prompt"], "completion": text, "tokens": len(toks)}
                if args.show_neighbors:
                    rec["retrievals"] = [{"chunk": tok.decode(c), "neighbors": [
                        tok.decode([t for t, ok in zip(n, m, strict=True) if ok]) for n, m in zip(nbs, ms, strict=True)]}
                        for c, nbs, ms in log]
                records.append(rec)
    _print(records, args.json)
    return 0


def _print(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return
    for n, r in enumerate(records, 1):
        print(f"--- {n}: {r['tokens']} new tokens ---")
        print(f"{r['prompt']}\033[1m{r['completion']}\033[0m" if sys.stdout.isatty() else r["prompt"] + r["completion"])
        for j, ret in enumerate(r.get("retrievals", [])):
            print(f"  [chunk {j}] {ret['chunk']!r}")
            for nb in ret["neighbors"]:
                print(f"      -> {nb[:160]!r}")
