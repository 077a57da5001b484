"""`pyretro bench` runs the packaged benchmarks and reports same-run ratios."""

import json

import pytest

from pyretro.cli.bench import _parse_overrides
from pyretro.cli.main import main


def test_bench_kernels_quick_json(capsys):
    assert main(["bench", "kernels", "--quick", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["area"] for r in rows} >= {"cca", "rope", "gather"}
    for r in rows:
        assert r["time_ms"] > 0 and r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_ms"] / r["time_ms"], rel=0.05)


def test_overrides_parse_and_reject():
    assert _parse_overrides("B=2,scale=0.5,dtype=bfloat16") == {"B": 2, "scale": 0.5, "dtype": "bfloat16"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        _parse_overrides("B2")
