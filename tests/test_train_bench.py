"""The training benchmark runs and reports consistent rows (timings are never asserted)."""

from __future__ import annotations

import pytest
from _train_fixtures import one_thread  # noqa: F401 (autouse fixture)

from pyretro.benchmarks.train import run


def test_train_benchmark_rows():
    rows = run(quick=True, layers=6, d_model=32, heads=2, vocab=128, seq=32, chunk_len=8, batch=1, steps=1)
    gpt, retro = rows
    assert gpt["name"] == "train step gpt" and retro["baseline"] == gpt["name"]
    assert retro["ratio"] == pytest.approx(gpt["time_ms"] / retro["time_ms"])
    assert retro["shape"]["encoder_d_model"] == 32 and gpt["tok_s"] > 0 and retro["cpu_ms"] > 0
    with pytest.raises(ValueError, match="unknown benchmark parameter"):
        run(quick=True, nope=1)
    with pytest.raises(ValueError, match="multiple of chunk_len"):
        run(quick=True, seq=30, chunk_len=8)
