"""Micro-benchmarks that ship with the package (``pyretro bench``; ``bench/*.py`` call the same code).

Each module ``pyretro.benchmarks.<area>`` exposes ``run(device="cpu", quick=False, **overrides) -> list[dict]``;
every row compares an op with a baseline measured in the same process (``ratio`` = baseline time / op time,
so > 1 means pyretro is faster).
"""

from __future__ import annotations

import importlib
from typing import Any

GROUPS: dict[str, list[str]] = {
    "kernels": ["cca", "rope", "gather"],
    "store": ["store"],
    "ingest": ["ingest"],
    "retrieval": ["retrieval"],
    "model": ["model"],
    "train": ["train"],
}

COLUMNS = ["name", "shape", "time_ms", "baseline", "baseline_ms", "ratio", "gb_s"]


def available(area: str) -> bool:
    try:
        importlib.import_module(f"pyretro.benchmarks.{area}")
    except ModuleNotFoundError as e:
        if e.name == f"pyretro.benchmarks.{area}":
            return False
        raise
    return True


def run_group(group: str, device: str = "cpu", quick: bool = False, **overrides: Any) -> list[dict]:
    if group not in GROUPS:
        raise ValueError(f"unknown benchmark group {group!r}; choose from {sorted(GROUPS)}")
    rows: list[dict] = []
    for area in GROUPS[group]:
        if not available(area):
            continue
        mod = importlib.import_module(f"pyretro.benchmarks.{area}")
        for row in mod.run(device=device, quick=quick, **overrides):
            rows.append({"area": area, **row})
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    return "" if v is None else str(v)


def format_table(rows: list[dict]) -> str:
    """A plain-text table of the standard columns (plus any extra keys present in every row)."""
    if not rows:
        return "(no rows)"
    cols = ["area"] if "area" in rows[0] else []
    cols += [c for c in COLUMNS if any(c in r for r in rows)]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
