"""Answer and summary metrics: SQuAD-style exact match / token F1, ROUGE-1/2/L and their geometric mean.

Per-example scores are fractions in [0, 1]; with several references an example scores the maximum over them
(SQuAD's rule). ROUGE comes from the ``rouge-score`` package (Google's re-implementation of ROUGE-1.5.5),
imported lazily so QA evaluation needs no extra dependency.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache

__all__ = [
    "ROUGE_TYPES",
    "exact_match",
    "normalize_answer",
    "rouge_geometric_mean",
    "rouge_scores",
    "token_f1",
]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = str(s).lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _refs(references: str | Sequence[str]) -> list[str]:
    if isinstance(references, str):
        return [references]
    if isinstance(references, Mapping):  # iterating it would score its keys ("text", "answer_start")
        raise TypeError("references: expected a string or a list of strings, got a mapping (SQuAD-style "
                        "{'text': [...]}? pass its 'text' list, or load files with load_qa_jsonl)")
    refs = [str(r) for r in references]
    if not refs:
        raise ValueError("references: need at least one reference answer")
    return refs


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in _refs(references)))


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:  # SQuAD: both empty -> 1, one empty -> 0
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """Bag-of-tokens F1 between normalized prediction and reference, maximum over references."""
    p = normalize_answer(prediction).split()
    return max(_f1(p, normalize_answer(r).split()) for r in _refs(references))


@lru_cache(maxsize=1)
def _scorer():
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError(
            "ROUGE needs the 'rouge-score' package: pip install 'pyretro[eval]' (or pip install rouge-score)"
        ) from None
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_scores(prediction: str, references: str | Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measures in [0, 1] (Porter stemming, as summarization papers report), each the maximum
    over the references."""
    scorer = _scorer()
    best = dict.fromkeys(ROUGE_TYPES, 0.0)
    for ref in _refs(references):
        s = scorer.score(ref, str(prediction))
        for k in ROUGE_TYPES:
            best[k] = max(best[k], float(s[k].fmeasure))
    return best


def rouge_geometric_mean(scores: Mapping[str, float]) -> float:
    """Geometric mean of ROUGE-1, ROUGE-2 and ROUGE-L (InstructRetro's summarization figure); 0 if any is 0."""
    vals = [float(scores[k]) for k in ROUGE_TYPES]
    if any(v <= 0 for v in vals):
        return 0.0
    return math.exp(sum(math.log(v) for v in vals) / len(vals))
