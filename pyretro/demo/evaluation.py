"""The demo's evaluation through ``pyretro.eval``: held-out perplexity (GPT, Retro with and without retrieval),
zero-shot QA on held-out entities in every mode, and a few answers generated with re-retrieval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pyretro.data.tokenizer import load_tokenizer, special_ids
from pyretro.demo.database import read_jsonl
from pyretro.eval import copy_probe, evaluate_perplexity, evaluate_qa, evaluate_qa_modes, load_qa_jsonl
from pyretro.model.io import load
from pyretro.retrieval import Retriever
from pyretro.train import RetroDataset


def perplexity(gpt_path: Path, retro_path: Path, db_dir: Path, seq_len: int, k: int, batch_size: int,
               device: str, progress: bool) -> dict[str, Any]:
    """Perplexity of the pretrained models on the held-out documents (never trained on, not in the database).
    GPT and Retro read exactly the same token windows; Retro's neighbours come from the eval table."""
    gpt, retro = load(gpt_path, device=device), load(retro_path, device=device)
    plain = RetroDataset(db_dir / "eval", seq_len=seq_len)
    with_nb = RetroDataset(db_dir / "eval", db_dir / "nb_eval", seq_len=seq_len, db_store=db_dir / "database",
                           k=k, r=retro.retro.r)
    results = {
        "gpt": evaluate_perplexity(gpt, plain, batch_size=batch_size, progress=progress),
        "retro": evaluate_perplexity(retro, with_nb, batch_size=batch_size, retrieval=True, progress=progress),
        "retro-decoder": evaluate_perplexity(retro, with_nb, batch_size=batch_size, retrieval=False,
                                             progress=progress),
    }
    out: dict[str, Any] = {m: _ppl_row(r) for m, r in results.items()}
    out["ratio_retro_over_gpt"] = out["retro"]["ppl"] / out["gpt"]["ppl"]
    out["samples"], out["k"] = len(plain), k
    # the leakage subsets come from Retro's neighbours: give GPT the same split for a fair clean comparison
    gpt_split = evaluate_perplexity(gpt, with_nb, batch_size=batch_size, progress=progress)
    out["gpt"]["clean_ppl"] = gpt_split.clean.ppl if gpt_split.clean else None
    return out


def name_reuse(model_paths: dict[str, Path], corpus_dir: Path, tokenizer_path: Path, *, max_tokens: int,
               docs: int = 100, device: str = "cpu") -> dict[str, dict[str, float]]:
    """How much cheaper a held-out person's name is once read: mean loss (nats per name token) at the name's first
    mention in a held-out document vs at its later mentions, in each document's first ``max_tokens`` tokens
    (Retro: its decoder alone). A model that copies from its context pays far less the second time."""
    tok = load_tokenizer(tokenizer_path)
    names = {e["id"]: e["name"] for e in read_jsonl(corpus_dir / "entities.jsonl")}
    rows = []  # (token ids, [(is_first, name token positions)])
    for d in read_jsonl(corpus_dir / "eval.jsonl")[:docs]:
        enc = tok.encode(d["text"], add_special_tokens=False)
        ids, offsets, name = enc.ids[:max_tokens], enc.offsets[:max_tokens], names[d["entity"]]
        mentions, start = [], d["text"].find(name)
        while start >= 0:
            pos = [t for t, (a, b) in enumerate(offsets) if t > 0 and a >= start and b <= start + len(name)]
            if pos:
                mentions.append((not mentions, pos))
            start = d["text"].find(name, start + len(name))
        rows.append((ids, mentions))
    out = {}
    for label, path in model_paths.items():
        model = load(path, device=device).eval()
        first, later = [], []
        for ids, mentions in rows:
            x = torch.tensor([ids], device=device)
            with torch.no_grad():
                logits = model(x)  # Retro without neighbours: its decoder alone
            nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), x[0, 1:], reduction="none")
            for is_first, pos in mentions:
                (first if is_first else later).extend(nll[[p - 1 for p in pos]].tolist())
        out[label] = {"first_nll": sum(first) / max(len(first), 1), "later_nll": sum(later) / max(len(later), 1),
                      "first_tokens": len(first), "later_tokens": len(later), "docs": len(rows),
                      "max_tokens": max_tokens}
    return out


def _ppl_row(r) -> dict[str, Any]:
    return {"ppl": r.ppl, "nll": r.nll, "tokens": r.tokens,
            "clean_ppl": r.clean.ppl if r.clean else None, "clean_tokens": r.clean.tokens if r.clean else None,
            "leaky_chunks": r.leaky_chunks, "chunks": r.chunks}


def question_answering(gpt_path: Path, retro_path: Path, qa_file: Path, tokenizer_path: Path, *,
                       max_context: int, max_new_tokens: int, device: str, progress: bool) -> tuple[dict, list]:
    """QA on held-out entities: GPT closed-book (no retrieval), GPT with the retrieved passages in the prompt,
    Retro with them in the prompt and the encoder, Retro's decoder alone (encoder ablated)."""
    tok = load_tokenizer(tokenizer_path)
    gpt, retro = load(gpt_path, device=device), load(retro_path, device=device)
    exs = load_qa_jsonl(qa_file)
    # Retro's encoder reads each passage cut into r-token pieces: up to 4 of them
    kw = dict(max_context=max_context, max_neighbors=4, max_new_tokens=max_new_tokens, batch_size=16,
              progress=progress)
    closed = evaluate_qa(gpt, tok, exs, mode="gpt", prompt_context=False, **kw)
    res = evaluate_qa_modes({"gpt": gpt, "retro": retro}, tok, exs, modes=["gpt", "retro", "retro-decoder"], **kw)
    results = [closed, *res.values()]
    table = {r.label: {"em": r.em, "f1": r.f1, "n": r.n} for r in results}
    return table, results


@torch.no_grad()
def answer_nll(gpt_path: Path, retro_path: Path, qa_file: Path, tokenizer_path: Path, *, max_neighbors: int,
               device: str, batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Teacher-forced NLL (nats per token) of the reference answer after the instruction-tuning prompt, per QA
    mode: a graded view of what greedy exact match sees only when the whole answer comes out right."""
    from pyretro.data.chat import ChatTemplate, Conversation
    from pyretro.eval import gate_for_eval
    from pyretro.eval.generation import passage_neighbors
    from pyretro.model import lm_loss

    tok = load_tokenizer(tokenizer_path)
    tmpl = ChatTemplate(tok)
    gpt, retro = load(gpt_path, device=device), load(retro_path, device=device)
    gpt.eval()
    retro.eval()
    recs = [json.loads(line) for line in open(qa_file, encoding="utf-8") if line.strip()]
    modes = {"gpt (closed-book)": (gpt, False, None), "gpt": (gpt, True, None), "retro": (retro, True, True),
             "retro-decoder": (retro, True, False)}
    out = {}
    for label, (model, ctx, retrieval) in modes.items():
        tot, cnt = 0.0, 0
        for s in range(0, len(recs), batch_size):
            part = recs[s: s + batch_size]
            enc = [tmpl.encode(Conversation.from_dict({**r, "context": r["context"] if ctx else []})) for r in part]
            n = max(len(ids) for ids, _ in enc)
            ids = torch.full((len(enc), n), tmpl.pad_id, dtype=torch.long)
            mask = torch.zeros((len(enc), n), dtype=torch.bool)
            for b, (i, m) in enumerate(enc):
                ids[b, : len(i)], mask[b, : len(m)] = torch.from_numpy(i), torch.from_numpy(m)
            ids, mask = ids.to(device), mask.to(device)
            if retrieval is None:
                logits = model(ids)
            else:
                nb, nm = passage_neighbors(tok, [r["context"] for r in part], model.retro.r, max_neighbors)
                L = max(n // model.retro.chunk_len, 1)
                nb = nb[:, None].expand(-1, L, -1, -1).to(device)
                nm = nm[:, None].expand(-1, L, -1, -1).to(device)
                with gate_for_eval(model, None):
                    logits = model(ids, nb, nm, retrieval=retrieval)
            k = int(mask[:, 1:].sum())
            tot += float(lm_loss(logits, ids, mask)) * k
            cnt += k
        out[label] = {"answer_nll": tot / max(cnt, 1), "answer_tokens": cnt}
    return out


def copying(gpt_path: Path, retro_path: Path, tokenizer_path: Path, *, device: str) -> dict[str, dict[str, float]]:
    """In-context copying of the instruction-tuned models (``pyretro.eval.copy_probe``, Retro's decoder alone):
    answering from a passage needs it, so the report shows it next to QA."""
    # ordinary tokens only: the demo's BPE numbers its special tokens first
    low = max((i for i in special_ids(load_tokenizer(tokenizer_path)).values() if i is not None), default=-1) + 1
    out = {}
    for label, path in (("gpt", gpt_path), ("retro-decoder", retro_path)):
        model = load(path, device=device)
        length = min(64, model.config.max_seq_len // 2)
        r = copy_probe(model, low=low, length=length)
        out[label] = {"first_nll": r.first_nll, "second_nll": r.second_nll, "length": length}
    return out


def examples_with_reretrieval(retro_path: Path, qa_file: Path, tokenizer_path: Path, retriever: Retriever, *,
                              n: int, k: int, max_context: int, max_new_tokens: int, device: str) -> list[dict]:
    """A few held-out questions answered by Retro with neighbours re-retrieved at every completed chunk."""
    tok = load_tokenizer(tokenizer_path)
    retro = load(retro_path, device=device)
    exs = load_qa_jsonl(qa_file)[:n]
    r = evaluate_qa(retro, tok, exs, mode="retro-retrieve", retriever=retriever, num_neighbors=k,
                    max_context=max_context, max_new_tokens=max_new_tokens, batch_size=n, progress=False)
    return [{"question": p["question"], "prediction": p["prediction"], "answers": p["answers"], "em": p["em"]}
            for p in r.predictions]
