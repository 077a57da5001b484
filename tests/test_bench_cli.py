"""`pyretro bench` runs the packaged benchmarks and reports same-run ratios; --dtype/--shapes reach the modules."""

import json
import sys
import types

import pytest

import pyretro
import pyretro.benchmarks as benchmarks
from pyretro.cli.bench import _parse_overrides
from pyretro.cli.main import main

TINY = "B=1,N=16,chunk_len=8,R=4,H=2,D=16,reps=1,tokens=50000,ids=32"


def _json_rows(capsys, *argv: str) -> list[dict]:
    assert main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_kernels_quick_json(capsys):
    rows = _json_rows(capsys, "kernels", "--quick", "--shapes", TINY)
    assert {r["area"] for r in rows} == {"cca", "rope", "gather"}
    for r in rows:
        assert r["time_ms"] > 0 and r["baseline_ms"] > 0 and r["baseline"]
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["time_ms"], rel=0.05)


def test_dtype_and_shapes_reach_the_modules(capsys):
    rows = _json_rows(capsys, "kernels", "--quick", "--dtype", "float64", "--shapes", TINY)
    for r in rows:
        if r["area"] in ("cca", "rope"):  # gather has no dtype parameter: it gets only its own overrides
            assert r["shape"].endswith("float64") and "D=16" in r["shape"], r["shape"]
            assert "B=1" in r["shape"], r["shape"]
        else:
            assert "chunk_len=8" in r["shape"], r["shape"]


def test_single_area_and_text_table(capsys):
    assert main(["bench", "rope", "--quick", "--shapes", "B=1,S=8,H=1,D=8,reps=1"]) == 0
    out = capsys.readouterr().out
    assert f"pyretro {pyretro.__version__}" in out.splitlines()[0] and "cuda_compiled=" in out
    header = out.splitlines()[1].split()
    assert header[:3] == ["area", "name", "shape"] and "ratio" in header and "baseline_ms" in header
    assert "rope_qk (fused q+k)" in out and "ratio = baseline_ms / time_ms" in out


def test_override_no_benchmark_takes_is_an_error(capsys):
    assert main(["bench", "store", "--dtype", "float32"]) == 1
    assert "does not take ['dtype']" in capsys.readouterr().err
    assert main(["bench", "kernels", "--shapes", "Q=3"]) == 1
    assert main(["bench", "kernels", "--dtype", "floaty"]) == 1
    assert "not a torch dtype" in capsys.readouterr().err


def test_groups_call_each_area_with_its_own_overrides(monkeypatch):
    """The train group calls pyretro.benchmarks.train.run (and train_data) lazily, each with its own keys."""
    calls = {}

    def fake(area, keys):
        mod = types.ModuleType(f"pyretro.benchmarks.{area}")
        mod.DEFAULTS = dict.fromkeys(keys, 0)

        def run(device="cpu", quick=False, **over):
            calls[area] = (device, quick, over)
            return [{"name": area, "time_ms": 2.0, "baseline": "x", "baseline_ms": 1.0, "ratio": 0.5}]

        mod.run = run
        monkeypatch.setitem(sys.modules, mod.__name__, mod)

    fake("train", ["layers", "seq"])
    fake("train_data", ["workers", "seq"])
    rows = benchmarks.run_group("train", quick=True, layers=1, seq=64, workers=0)
    assert [r["area"] for r in rows] == ["train", "train_data"]
    assert calls["train"] == ("cpu", True, {"layers": 1, "seq": 64})
    assert calls["train_data"] == ("cpu", True, {"seq": 64, "workers": 0})


def test_missing_area_is_skipped_with_a_message(monkeypatch, capsys):
    monkeypatch.setitem(benchmarks.GROUPS, "later", ["not_written_yet"])
    monkeypatch.setattr(benchmarks, "AREAS", [*benchmarks.AREAS, "not_written_yet"])
    skipped: list[str] = []
    assert benchmarks.run_group("later", skipped=skipped) == [] and skipped == ["not_written_yet"]
    assert main(["bench", "later"]) == 0  # the parser's choices are built per call, from GROUPS
    captured = capsys.readouterr()
    assert "skipped 'not_written_yet'" in captured.err and "(no rows)" in captured.out


def test_list_names_every_area(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for area in benchmarks.AREAS:
        assert f"  {area}:" in out
    assert "kernels: cca, rope, gather" in out


def test_unknown_group():
    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        benchmarks.run_group("nope")


def test_overrides_parse_and_reject():
    assert _parse_overrides("B=2,scale=0.5,dtype=bfloat16") == {"B": 2, "scale": 0.5, "dtype": "bfloat16"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _parse_overrides("B2")


def test_model_bench_compiled_rows_are_relative_to_the_compiled_gpt():
    from pyretro.benchmarks.model import run

    rows = run("cpu", quick=True, layers=6, d_model=32, heads=2, vocab=64, seq=128, chunk_len=16, reps=1,
               narrow_encoder=16, cca_kv_heads=1, generation=0, compile=1, compile_backend="eager")
    by = {r["name"]: r for r in rows}
    gpt, gptc = by["gpt train step"], by["gpt train step, compiled"]
    assert gptc["baseline"] == "gpt train step" and gptc["baseline_ms"] == gpt["time_ms"]
    compiled = [r for r in rows if r["name"].startswith("retro") and r["name"].endswith("compiled")]
    eager = [r for r in rows if r["name"].startswith("retro") and r["name"].endswith("fused ops")]
    # the default, grouped-query CCA, the narrow encoder and both, each eager and compiled
    assert len(compiled) == len(eager) == 4
    flops = {r["name"]: r["flops_x"] for r in eager}
    narrow = flops["retro train step (encoder width 16), fused ops"]
    both = flops["retro train step (encoder width 16 + grouped-query CCA, 1 kv heads), fused ops"]
    assert 1 < both < narrow < flops["retro train step (default: encoder width = d_model, full-head CCA), fused ops"]
    for r in compiled:
        assert r["baseline"] == "gpt train step, compiled" and r["baseline_ms"] == gptc["time_ms"]
        assert r["cost_x"] == pytest.approx(r["time_ms"] / gptc["time_ms"])  # one round: the ratio of the times
        assert r["flops_x"] > 1
    for r in eager:
        assert r["baseline"] == "gpt train step" and r["cost_x"] == pytest.approx(r["time_ms"] / gpt["time_ms"])
