"""Resumable stages: each finished stage leaves ``stages/<name>.json`` (its settings key, wall time, metrics).

A rerun skips a stage whose record has the same key (a hash of every setting the stage depends on, including
through its inputs), so changing e.g. only the QA settings reruns only the QA stages. A stage killed half-way
leaves no record and reruns (training phases then resume from their own checkpoints)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class StageRunner:
    def __init__(self, out: Path, key: Callable[[str], str], progress: bool = True) -> None:
        self.dir = Path(out) / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.progress = progress
        self.records: dict[str, dict[str, Any]] = {}
        self.skipped: list[str] = []
        self.ran: list[str] = []

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    def run(self, name: str, title: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Runs ``fn`` (returning JSON-able metrics) unless it already finished with the same key."""
        path = self.dir / f"{name}.json"
        key = self.key(name)
        if path.is_file():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                rec = None
            if rec and rec.get("key") == key:
                self.records[name] = rec
                self.skipped.append(name)
                self._say(f"[{len(self.records)}] {title}: done before ({rec['wall_s']:.1f} s), skipped")
                return rec["metrics"]
        self._say(f"[{len(self.records) + 1}] {title} ...")
        t0 = time.perf_counter()
        metrics = fn()
        wall = time.perf_counter() - t0
        rec = {"name": name, "title": title, "key": key, "wall_s": wall, "metrics": metrics}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, indent=2, default=str) + "\n")
        os.replace(tmp, path)
        self.records[name] = rec
        self.ran.append(name)
        self._say(f"    {title}: {wall:.1f} s")
        return metrics
