"""Micro-benchmarks that ship with the package (``pyretro bench``; ``bench/*.py`` call the same code).

Each module ``pyretro.benchmarks.<area>`` exposes ``run(device="cpu", quick=False, **overrides) -> list[dict]``;
every row compares an op with a baseline measured in the same process (``ratio`` = baseline time / op time,
so > 1 means pyretro is faster). A module's ``DEFAULTS`` dict names the overrides it accepts; ``run_group``
hands each module only its own, so one ``--shapes``/``--dtype`` can serve a whole group.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

GROUPS: dict[str, list[str]] = {
    "kernels": ["cca", "rope", "gather"],
    "store": ["store"],
    "ingest": ["ingest"],
    "retrieval": ["retrieval"],
    "model": ["model"],
    "train": ["train", "train_data"],
}
AREAS: list[str] = sorted({a for areas in GROUPS.values() for a in areas})

# overrides a module reads that are not keys of its DEFAULTS
ALIASES: dict[str, set[str]] = {"rope": {"N"}}

COLUMNS = ["name", "shape", "time_ms", "baseline", "baseline_ms", "ratio", "gb_s"]


def areas_of(target: str) -> list[str]:
    """A group name (``kernels``) or a single area (``cca``) -> the areas to run."""
    if target in GROUPS:
        return GROUPS[target]
    if target in AREAS:
        return [target]
    raise ValueError(f"unknown benchmark {target!r}; groups: {sorted(GROUPS)}; areas: {AREAS}")


def load(area: str) -> ModuleType | None:
    """The area's module, or None when this install does not have it (an optional part not written yet)."""
    try:
        return importlib.import_module(f"pyretro.benchmarks.{area}")
    except ModuleNotFoundError as e:
        if e.name == f"pyretro.benchmarks.{area}":
            return None
        raise


def available(area: str) -> bool:
    return load(area) is not None


def params(mod: ModuleType, area: str) -> set[str] | None:
    """Override names the module accepts (None: it takes any, having no DEFAULTS)."""
    defaults = getattr(mod, "DEFAULTS", None)
    return None if defaults is None else set(defaults) | ALIASES.get(area, set())


def run_group(group: str, device: str = "cpu", quick: bool = False, skipped: list[str] | None = None,
              **overrides: Any) -> list[dict]:
    """Runs every area of ``group`` (or the single area ``group``). An override must be accepted by at least one
    of them (else ``ValueError`` listing what they accept); each area gets only the ones it knows. Areas missing
    from this install are skipped and, when given, named in ``skipped``."""
    mods = {area: load(area) for area in areas_of(group)}
    present = {a: m for a, m in mods.items() if m is not None}
    if skipped is not None:
        skipped += [a for a, m in mods.items() if m is None]
    accepted = {a: params(m, a) for a, m in present.items()}
    if present and all(p is not None for p in accepted.values()):
        known = set().union(*accepted.values())  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"benchmark {group!r} does not take {unknown}; its parameters: {sorted(known)}")
    rows: list[dict] = []
    for area, mod in present.items():
        keys = accepted[area]
        mine = {k: v for k, v in overrides.items() if keys is None or k in keys}
        for row in mod.run(device=device, quick=quick, **mine):
            rows.append({"area": area, **row})
    return rows


def describe() -> str:
    """Groups, their areas and each area's parameters with default values (``pyretro bench --list``)."""
    lines = []
    for group, areas in GROUPS.items():
        lines.append(f"{group}: {', '.join(areas)}")
    for area in AREAS:
        mod = load(area)
        if mod is None:
            lines.append(f"  {area}: (not in this install)")
            continue
        defaults = getattr(mod, "DEFAULTS", None)
        keys = "any (see the module docstring)" if defaults is None else ", ".join(
            f"{k}={v}" for k, v in defaults.items())
        extra = ALIASES.get(area)
        lines.append(f"  {area}: {keys}" + (f" (also {', '.join(sorted(extra))})" if extra else ""))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
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
    cols += [k for k in rows[0] if k not in cols and all(k in r for r in rows[1:])]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
