"""Reports: table, Markdown, JSON (NaN -> null) and the plot for every kind of result."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from pyretro.eval import (
    PerplexityResult,
    QAResult,
    SubsetStats,
    SummarizationResult,
    print_table,
    to_markdown,
    write_report,
)


def results():
    return [
        PerplexityResult("gpt", 2.0, 7.389, 100, 4, SubsetStats(1.9, 6.686, 80), SubsetStats(float("nan"), float("nan"), 0),
                         chunks=16, leaky_chunks=0),
        PerplexityResult("retro", 1.5, 4.482, 100, 4, SubsetStats(1.6, 4.953, 80), SubsetStats(1.1, 3.004, 20),
                         chunks=16, leaky_chunks=4),
        QAResult("gpt", 10.0, 20.5, 10, [{"id": "1", "prediction": "x"}]),
        QAResult("retro", 40.0, 55.25, 10, label="retro (closed-book)"),
        SummarizationResult("retro-decoder", 30.0, 10.0, 25.0, 18.2, 3),
    ]


def test_write_report_and_table(tmp_path):
    paths = write_report(tmp_path / "out", results(), title="Demo", notes=["tiny run"])
    assert set(paths) == {"json", "markdown", "plot"} and all(p.is_file() for p in paths.values())
    data = json.loads(paths["json"].read_text())
    assert data["title"] == "Demo" and [r["kind"] for r in data["results"]] == [
        "perplexity", "perplexity", "qa", "qa", "summarization"]
    assert data["results"][0]["leaky"]["nll"] is None  # NaN of an empty subset is written as null
    assert data["results"][2]["predictions"] == [{"id": "1", "prediction": "x"}]
    md = paths["markdown"].read_text()
    assert md.startswith("# Demo") and "- tiny run" in md
    assert "| retro | 4.48 | 100 | 4.95 | 80 | 3.00 | 20 | 4/16 |" in md
    assert "| retro (closed-book) | 40.00 | 55.25 | 10 |" in md and "| retro-decoder | 30.00 | 10.00 | 25.00 | 18.20 | 3 |" in md
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    console = Console(record=True, width=160)
    print_table(results(), console=console)
    text = console.export_text()
    assert "Perplexity" in text and "Zero-shot QA" in text and "ROUGE-2" in text and "retro (closed-book)" in text
    assert to_markdown(results()[:1]).count("\n|---|") == 1  # one table


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to report"):
        write_report(tmp_path, [])
    assert "plot" not in write_report(tmp_path, results()[2:3], plot=False)
