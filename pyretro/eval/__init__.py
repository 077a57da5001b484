"""Evaluation: perplexity (with / without retrieval, leakage-filtered), zero-shot QA (EM / F1) and
summarization (ROUGE) for GPT, Retro and Retro's decoder alone; reports. See docs/eval.md."""

from pyretro.eval._models import MODES, gate_for_eval, resolve_gate
from pyretro.eval.copying import CopyProbe, copy_probe
from pyretro.eval.data import (
    QAExample,
    SummExample,
    load_documents,
    load_qa_jsonl,
    load_summarization_jsonl,
    qa_examples_from_records,
    read_jsonl,
    summarization_examples_from_records,
)
from pyretro.eval.generation import generate_texts, passage_neighbors, retriever_fn
from pyretro.eval.leakage import leaky_chunks
from pyretro.eval.metrics import exact_match, normalize_answer, rouge_geometric_mean, rouge_scores, token_f1
from pyretro.eval.perplexity import PerplexityResult, SubsetStats, evaluate_perplexity, leaky_token_mask
from pyretro.eval.qa import QAResult, evaluate_qa, evaluate_qa_modes, resolve_contexts, select_passages
from pyretro.eval.report import print_table, summary_rows, to_markdown, write_report
from pyretro.eval.summarization import (
    SummarizationResult,
    evaluate_summarization,
    evaluate_summarization_modes,
)

__all__ = [
    "MODES", "gate_for_eval", "resolve_gate",
    "CopyProbe", "copy_probe",
    "QAExample", "SummExample", "load_documents", "load_qa_jsonl", "load_summarization_jsonl",
    "qa_examples_from_records", "read_jsonl", "summarization_examples_from_records",
    "generate_texts", "passage_neighbors", "retriever_fn",
    "leaky_chunks",
    "exact_match", "normalize_answer", "rouge_geometric_mean", "rouge_scores", "token_f1",
    "PerplexityResult", "SubsetStats", "evaluate_perplexity", "leaky_token_mask",
    "QAResult", "evaluate_qa", "evaluate_qa_modes", "resolve_contexts", "select_passages",
    "print_table", "summary_rows", "to_markdown", "write_report",
    "SummarizationResult", "evaluate_summarization", "evaluate_summarization_modes",
]
