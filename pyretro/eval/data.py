"""Evaluation files: JSONL readers for QA and summarization (formats in docs/eval.md).

Field names of the usual public files are accepted as they are, so NQ / TriviaQA / SQuAD / DPR-style and
CNN-DailyMail / XSum-style records need no conversion script.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QAExample",
    "SummExample",
    "load_documents",
    "load_qa_jsonl",
    "load_summarization_jsonl",
    "qa_examples_from_records",
    "read_jsonl",
    "summarization_examples_from_records",
]


@dataclass
class QAExample:
    id: str
    question: str
    answers: list[str]
    context: list[str] = field(default_factory=list)  # passages placed in the prompt (and as neighbours)
    document: str | None = None  # a long text to chunk and search when ``context`` is empty


@dataclass
class SummExample:
    id: str
    document: str
    summaries: list[str]


def read_jsonl(path: str | os.PathLike, what: str = "data") -> list[dict[str, Any]]:
    """One JSON object per non-blank line (``_line`` = its line number); errors name the file and the line."""
    from pyretro.train.sft_data import read_jsonl as _read

    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no such file: {path}")
    out = []
    for i, rec in _read(path):
        rec.setdefault("_line", i)
        out.append(rec)
    if not out:
        raise ValueError(f"{what}: {path} holds no records")
    return out


def _where(rec: Mapping[str, Any], source: str, i: int) -> str:
    return f"{source}:{rec['_line']}" if "_line" in rec else f"{source}[{i}]"


def _strings(x: Any) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    if isinstance(x, Mapping):  # SQuAD (HF): {"text": [...]}, TriviaQA: {"aliases", "value", ...}
        for key in ("text", "aliases", "normalized_aliases", "value", "normalized_value"):
            if key in x:
                return _strings(x[key])
        return []
    if isinstance(x, Iterable):
        out: list[str] = []
        for v in x:
            out += _strings(v) if not isinstance(v, (str, int, float)) else [str(v)]
        return out
    return [str(x)]


def _passage(p: Any) -> str:
    if isinstance(p, Mapping):  # DPR / FiD "ctxs": {"title", "text"}
        text = str(p.get("text", p.get("passage", "")))
        title = p.get("title")
        return f"{title}: {text}" if title else text
    return str(p)


def load_documents(documents: Mapping[str, str] | str | os.PathLike | None) -> dict[str, str] | None:
    """``{doc id: text}`` from a mapping or a JSONL of ``{"id", "text"}`` records (a synthetic corpus'
    documents.jsonl)."""
    if documents is None or isinstance(documents, Mapping):
        return None if documents is None else dict(documents)
    recs = read_jsonl(documents, "documents")
    out = {}
    for r in recs:
        if "id" not in r or "text" not in r:
            raise ValueError(f"{documents}:{r['_line']}: a document needs 'id' and 'text'")
        out[str(r["id"])] = str(r["text"])
    return out


def qa_examples_from_records(records: Sequence[Mapping[str, Any]], documents=None,
                             source: str = "records") -> list[QAExample]:
    """QA records -> :class:`QAExample` (accepted fields in docs/eval.md). ``documents`` ({id: text} or a JSONL
    path) resolves ``context_ids``."""
    docs = load_documents(documents)
    out = []
    for i, r in enumerate(records):
        where = _where(r, source, i)
        q = r.get("question", r.get("query"))
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{where}: missing or empty 'question'")
        answers = _strings(r.get("answers", r.get("answer")))
        if not answers:
            raise ValueError(f"{where}: no reference answers ('answers' list or 'answer')")
        raw = r.get("context", r.get("contexts", r.get("ctxs", r.get("passages"))))
        context = [_passage(p) for p in ([raw] if isinstance(raw, (str, Mapping)) else raw or [])]
        if not context and r.get("context_ids"):
            if docs is None:
                raise ValueError(f"{where}: 'context_ids' need the documents (pass documents= / --documents)")
            missing = [d for d in r["context_ids"] if str(d) not in docs]
            if missing:
                raise ValueError(f"{where}: context_ids not among the documents: {missing[:5]}")
            context = [docs[str(d)] for d in r["context_ids"]]
        document = r.get("document")
        if document is not None and not isinstance(document, str):
            raise ValueError(f"{where}: 'document' must be a string")
        out.append(QAExample(str(r.get("id", i)), q, answers, context, document))
    if not out:
        raise ValueError(f"{source}: no QA examples")
    return out


def load_qa_jsonl(path: str | os.PathLike, documents=None) -> list[QAExample]:
    return qa_examples_from_records(read_jsonl(path, "QA data"), documents, source=str(path))


def summarization_examples_from_records(records: Sequence[Mapping[str, Any]],
                                        source: str = "records") -> list[SummExample]:
    out = []
    for i, r in enumerate(records):
        where = _where(r, source, i)
        doc = r.get("document", r.get("article", r.get("text")))
        if not isinstance(doc, str) or not doc.strip():
            raise ValueError(f"{where}: missing or empty 'document'")
        refs = _strings(r.get("summaries", r.get("summary", r.get("highlights"))))
        if not refs:
            raise ValueError(f"{where}: no reference summary ('summary' or 'summaries')")
        out.append(SummExample(str(r.get("id", i)), doc, refs))
    if not out:
        raise ValueError(f"{source}: no summarization examples")
    return out


def load_summarization_jsonl(path: str | os.PathLike) -> list[SummExample]:
    return summarization_examples_from_records(read_jsonl(path, "summarization data"), source=str(path))
