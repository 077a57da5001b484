"""Benchmark parameters: defaults, the ``--quick`` preset, then the caller's overrides (unknown keys refused)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def resolve(defaults: Mapping[str, Any], quick_preset: Mapping[str, Any], quick: bool,
            overrides: Mapping[str, Any]) -> dict[str, Any]:
    p = dict(defaults)
    if quick:
        p.update(quick_preset)
    unknown = set(overrides) - set(p)
    if unknown:
        raise ValueError(f"unknown benchmark parameter(s) {sorted(unknown)}; known: {sorted(p)}")
    p.update({k: v for k, v in overrides.items() if v is not None})
    return p
