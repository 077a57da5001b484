"""Zero-shot QA as InstructRetro evaluates it: context passages in the prompt, greedy answers, SQuAD EM / F1.

An example without passages but with a long ``document`` has it cut into passages of ``passage_words`` words,
and the ``max_context`` passages most similar to the question (embedder cosine) become its context, most
relevant first. Modes (docs/eval.md): ``gpt``, ``retro``, ``retro-decoder``, ``retro-retrieve``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from pyretro.eval._models import MODES, check_mode, default_mode, model_for_mode
from pyretro.eval.data import QAExample
from pyretro.eval.generation import generate_texts
from pyretro.eval.metrics import exact_match, token_f1
from pyretro.model import GPT, RetroModel
from pyretro.model.generate import generate

__all__ = ["QAResult", "evaluate_qa", "evaluate_qa_modes", "resolve_contexts", "select_passages"]


@dataclass
class QAResult:
    mode: str
    em: float  # percent
    f1: float  # percent
    n: int
    predictions: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the name in reports (default: the mode)

    kind = "qa"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


@lru_cache(maxsize=4)
def _embedder(spec: str):
    from pyretro.retrieval.embedders import make_embedder

    return make_embedder(spec)


def select_passages(document: str, question: str, k: int = 5, passage_words: int = 100,
                    embedder: str | Any = "hashing:1024") -> list[str]:
    """The ``k`` passages of ``passage_words`` words of ``document`` most similar to ``question``."""
    words = document.split()
    if not words or k < 1:
        return []
    passages = [" ".join(words[i: i + passage_words]) for i in range(0, len(words), passage_words)]
    if len(passages) <= k:
        return passages
    emb = _embedder(embedder) if isinstance(embedder, str) else embedder
    vecs = emb.embed(passages + [question])
    scores = vecs[:-1] @ vecs[-1]
    top = np.argsort(-scores, kind="stable")[:k]
    return [passages[i] for i in top]


def resolve_contexts(examples: Sequence[QAExample], max_context: int = 5, passage_words: int = 100,
                     embedder: str | Any = "hashing:1024") -> list[QAExample]:
    """Examples whose context is set: given passages (first ``max_context``) or passages selected from the
    document."""
    out = []
    for ex in examples:
        ctx = list(ex.context)[:max_context]
        if not ctx and ex.document:
            ctx = select_passages(ex.document, ex.question, max_context, passage_words, embedder)
        out.append(replace(ex, context=ctx, document=None))
    return out


def evaluate_qa(
    model: GPT | RetroModel,
    tokenizer,
    examples: Sequence[QAExample],
    *,
    mode: str | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    max_context: int = 5,
    passage_words: int = 100,
    embedder: str | Any = "hashing:1024",
    max_neighbors: int | None = None,
    retriever=None,
    num_neighbors: int | None = None,
    retro_gate: float | None = None,
    system: str | None = None,
    prompt_context: bool = True,
    label: str | None = None,
    progress: bool = True,
    generate_fn: Callable = generate,
) -> QAResult:
    """Generates an answer per example greedily (stops at the end-of-document token or a role marker opening a
    new turn) and scores it against the
    references with :func:`exact_match` / :func:`token_f1`. ``mode`` defaults to ``gpt`` / ``retro`` by model
    type. ``max_neighbors`` (mode retro, default ``max_context``) caps the r-token passage pieces given to the
    encoder; ``retriever`` + ``num_neighbors`` serve mode ``retro-retrieve``. ``prompt_context=False``:
    closed book (no passages in the prompt; mode ``retro`` still encodes them). ``label``: the name in reports
    (default: the mode, plus " (closed-book)" without prompt context)."""
    mode = check_mode(mode or default_mode(model))
    if not examples:
        raise ValueError("examples: no QA examples to evaluate")
    exs = resolve_contexts(examples, max_context, passage_words, embedder)
    preds, info = generate_texts(
        model, tokenizer, [(e.question, e.context) for e in exs], mode=mode, ids=[e.id for e in exs],
        max_new_tokens=max_new_tokens, batch_size=batch_size, max_neighbors=max_neighbors or max_context,
        retriever=retriever, num_neighbors=num_neighbors, retro_gate=retro_gate, system=system,
        prompt_context=prompt_context, progress=progress, generate_fn=generate_fn,
    )
    rows = []
    for e, p in zip(exs, preds, strict=True):
        rows.append({"id": e.id, "question": e.question, "prediction": p, "answers": e.answers,
                     "em": exact_match(p, e.answers), "f1": token_f1(p, e.answers)})
    n = len(rows)
    em = 100.0 * sum(r["em"] for r in rows) / n
    f1 = 100.0 * sum(r["f1"] for r in rows) / n
    info["max_context"] = max_context
    if label is None:
        label = mode if prompt_context else f"{mode} (closed-book)"
    return QAResult(mode, em, f1, n, rows, info, label)


def evaluate_qa_modes(
    models: Mapping[str, GPT | RetroModel],
    tokenizer,
    examples: Sequence[QAExample],
    modes: Sequence[str] | None = None,
    **kwargs,
) -> dict[str, QAResult]:
    """The same examples in several modes (default: every mode the given models and a ``retriever`` allow);
    ``models`` maps "gpt" / "retro" to models. Passages are selected once and shared."""
    kwargs.pop("label", None)  # one label per result: the mode's default
    if modes is None:
        modes = [m for m in MODES if (m == "gpt" and "gpt" in models) or
                 (m in ("retro", "retro-decoder") and "retro" in models) or
                 (m == "retro-retrieve" and "retro" in models and kwargs.get("retriever") is not None)]
    if not modes:
        raise ValueError("models: give a 'gpt' and/or a 'retro' model")
    exs = resolve_contexts(examples, kwargs.get("max_context", 5), kwargs.get("passage_words", 100),
                           kwargs.get("embedder", "hashing:1024"))
    return {m: evaluate_qa(model_for_mode(models, m), tokenizer, exs, mode=m, **kwargs) for m in modes}
