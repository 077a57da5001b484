"""Summarization: the document as the prompt's context passage, an instruction as the question, greedy
generation, ROUGE-1/2/L F-measures (max over references) and their geometric mean (InstructRetro's figure).

Mode ``retro`` also gives the encoder the document cut into r-token pieces (the first ``max_neighbors``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyretro.eval._models import check_mode, default_mode, model_for_mode
from pyretro.eval.data import SummExample
from pyretro.eval.generation import generate_texts
from pyretro.eval.metrics import ROUGE_TYPES, _scorer, rouge_geometric_mean, rouge_scores
from pyretro.model import GPT, RetroModel
from pyretro.model.generate import generate

__all__ = ["DEFAULT_INSTRUCTION", "SummarizationResult", "evaluate_summarization", "evaluate_summarization_modes"]

DEFAULT_INSTRUCTION = "Summarize the document above."


@dataclass
class SummarizationResult:
    mode: str
    rouge1: float  # percent, mean over examples
    rouge2: float
    rougeL: float
    rouge_gm: float  # geometric mean of the three means
    n: int
    predictions: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    kind = "summarization"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


def evaluate_summarization(
    model: GPT | RetroModel,
    tokenizer,
    examples: Sequence[SummExample],
    *,
    mode: str | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
    max_new_tokens: int = 256,
    batch_size: int = 4,
    max_neighbors: int = 5,
    retriever=None,
    num_neighbors: int | None = None,
    retro_gate: float | None = None,
    system: str | None = None,
    progress: bool = True,
    generate_fn: Callable = generate,
) -> SummarizationResult:
    """Summarizes each example greedily and scores it with :func:`rouge_scores`; corpus figures are the means
    over examples (x100) and the geometric mean of those means."""
    mode = check_mode(mode or default_mode(model))
    if not examples:
        raise ValueError("examples: no summarization examples to evaluate")
    _scorer()  # fail before generating when rouge-score is missing
    preds, info = generate_texts(
        model, tokenizer, [(instruction, [e.document]) for e in examples], mode=mode,
        ids=[e.id for e in examples], max_new_tokens=max_new_tokens, batch_size=batch_size,
        max_neighbors=max_neighbors, retriever=retriever, num_neighbors=num_neighbors, retro_gate=retro_gate,
        system=system, progress=progress, generate_fn=generate_fn,
    )
    rows = []
    for e, p in zip(examples, preds, strict=True):
        rows.append({"id": e.id, "prediction": p, "summaries": e.summaries, **rouge_scores(p, e.summaries)})
    n = len(rows)
    means = {k: sum(r[k] for r in rows) / n for k in ROUGE_TYPES}
    info["instruction"] = instruction
    return SummarizationResult(mode, *(100.0 * means[k] for k in ROUGE_TYPES),
                               100.0 * rouge_geometric_mean(means), n, rows, info)


def evaluate_summarization_modes(models: Mapping[str, GPT | RetroModel], tokenizer,
                                 examples: Sequence[SummExample], modes: Sequence[str] | None = None,
                                 **kwargs) -> dict[str, SummarizationResult]:
    if modes is None:
        modes = (["gpt"] if "gpt" in models else []) + (["retro", "retro-decoder"] if "retro" in models else [])
    if not modes:
        raise ValueError("models: give a 'gpt' and/or a 'retro' model")
    return {m: evaluate_summarization(model_for_mode(models, m), tokenizer, examples, mode=m, **kwargs)
            for m in modes}
