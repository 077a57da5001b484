"""Question answering data with retrieved context (InstructRetro: retrieved passages in the prompt).

Each question is a query to the retrieval database; the documents of its nearest chunks (``kind="document"``)
or the chunks themselves with their continuation (``"chunk"``: r tokens, the windows Retro's encoder reads)
become the context. Held-out entities' questions are the evaluation set (their answers are only in the
database); the instruction-tuning set is the training entities' questions or those of the other held-out
entities (``sft_entities``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.data.synthetic import write_jsonl
from pyretro.retrieval import Retriever


def retrieve_passages(retriever: Retriever, questions: list[str], k: int, r: int) -> list[list[str]]:
    """Top-``k`` database chunks (+ continuation, ``r`` tokens) per question, decoded to text."""
    if not questions:
        return []
    ids = retriever.query_chunks(questions, k=k)
    tokens, mask = retriever.store.gather(ids, r=r)
    tok = retriever.store.tokenizer
    out = []
    for row_t, row_m, row_i in zip(np.asarray(tokens), np.asarray(mask), ids, strict=True):
        out.append([tok.decode(t[m].tolist(), skip_special_tokens=True).strip()
                    for t, m, i in zip(row_t, row_m, row_i, strict=True) if i >= 0])
    return out


def retrieve_documents(retriever: Retriever, questions: list[str], k: int) -> list[list[str]]:
    """The first ``k`` distinct database documents among each question's nearest chunks (InstructRetro's passages
    are ~100 words: one document of this corpus), decoded to text."""
    if not questions:
        return []
    ids = retriever.query_chunks(questions, k=4 * k)
    store, tok = retriever.store, retriever.store.tokenizer
    out = []
    for row in ids:
        docs: list[int] = []
        for i in row[row >= 0]:
            d = int(store.chunk_doc[i])
            if d not in docs:
                docs.append(d)
        out.append([tok.decode(store.document(d).tolist(), skip_special_tokens=True).strip() for d in docs[:k]])
    return out


def build_qa_files(qa: list[dict[str, Any]], retriever: Retriever, out_dir: Path, *, passages: int, r: int,
                   n_eval: int, seed: int, kind: str = "document", sft_entities: str = "train") -> dict[str, Any]:
    """Writes ``sft_train.jsonl`` and ``qa_eval.jsonl`` (``n_eval`` held-out questions, a seeded sample), each
    record ``{id, question, answers, context}``; returns counts and context recall (the share of questions whose
    passages contain the answer: an upper bound on exact match).

    ``sft_entities``: whose questions tune the models. ``"train"``: the training entities (their facts were in
    pretraining, so an answer can come from memory as well as from the passage). ``"heldout"``: half of the
    held-out entities, seeded, the other half being the evaluation's: facts the models never trained on, so only
    reading the passage helps (InstructRetro's blend is mostly such context-grounded reading data)."""
    if sft_entities not in ("train", "heldout"):
        raise ValueError(f"sft_entities must be 'train' or 'heldout', got {sft_entities!r}")
    train = [q for q in qa if q["split"] == "train"]
    held = [q for q in qa if q["split"] == "heldout"]
    if sft_entities == "heldout":
        ents = sorted({q["entity"] for q in held})
        if len(ents) < 2:
            raise ValueError(f"sft_entities='heldout' splits the held-out people in two, but there are {len(ents)}: "
                             "raise heldout_fraction or num_entities, or use sft_entities='train'")
        random.Random(f"{seed}-sft-entities").shuffle(ents)
        tune = set(ents[: len(ents) // 2])
        train = [q for q in held if q["entity"] in tune]
        held = [q for q in held if q["entity"] not in tune]
    random.Random(seed).shuffle(held)
    held = held[:n_eval]
    stats: dict[str, Any] = {}
    for name, recs in (("sft_train", train), ("qa_eval", held)):
        questions = [q["question"] for q in recs]
        if kind == "document":
            ctx = retrieve_documents(retriever, questions, passages)
        else:
            ctx = retrieve_passages(retriever, questions, passages, r)
        rows = [{"id": q["id"], "question": q["question"], "answers": q["answers"], "context": c,
                 "attribute": q["attribute"]} for q, c in zip(recs, ctx, strict=True)]
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        hit = [any(q["answers"][0] in p for p in c) for q, c in zip(recs, ctx, strict=True)]
        stats[name] = {"questions": len(rows), "context_recall": float(np.mean(hit)) if hit else 0.0,
                       "entities": len({q["entity"] for q in recs})}
    stats["sft_entities"] = sft_entities
    return stats
