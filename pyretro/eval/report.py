"""Results as tables (stdout via rich, Markdown), JSON and bar plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["print_table", "summary_rows", "to_markdown", "write_report"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.2f}" if abs(v) < 1e5 else f"{v:.3g}"
    return "-" if v is None else str(v)


def summary_rows(results: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
    """One row per result, grouped by kind (perplexity | qa | summarization)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        kind = r.kind
        if kind == "perplexity":
            row = {"mode": r.mode, "ppl": r.ppl, "tokens": r.tokens}
            if r.clean is not None:
                row.update({
                    f"ppl (no leak >={r.min_overlap})": r.clean.ppl, "clean tokens": r.clean.tokens,
                    "ppl (leaky)": r.leaky.ppl, "leaky tokens": r.leaky.tokens,
                    "leaky chunks": f"{r.leaky_chunks}/{r.chunks}",
                })
        elif kind == "qa":
            row = {"mode": r.label or r.mode, "EM": r.em, "F1": r.f1, "n": r.n}
        elif kind == "summarization":
            row = {"mode": r.mode, "ROUGE-1": r.rouge1, "ROUGE-2": r.rouge2, "ROUGE-L": r.rougeL,
                   "geo. mean": r.rouge_gm, "n": r.n}
        else:
            raise TypeError(f"results: unknown result kind {kind!r}")
        groups.setdefault(kind, []).append(row)
    return groups


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    return cols


_TITLES = {"perplexity": "Perplexity", "qa": "Zero-shot QA (%)", "summarization": "Summarization (ROUGE F, %)"}


def print_table(results: Sequence[Any], console=None) -> None:
    """Prints one table per kind of result to stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for kind, rows in summary_rows(results).items():
        cols = _columns(rows)
        t = Table(title=_TITLES[kind])
        for c in cols:
            t.add_column(c, justify="left" if c == "mode" else "right", no_wrap=c == "mode")
        for row in rows:
            t.add_row(*(_fmt(row.get(c)) for c in cols))
        console.print(t)


def to_markdown(results: Sequence[Any], title: str = "pyretro evaluation", notes: Sequence[str] = ()) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    for kind, rows in summary_rows(results).items():
        cols = _columns(rows)
        lines += [f"## {_TITLES[kind]}", "", "| " + " | ".join(cols) + " |",
                  "|" + "|".join("---" if c == "mode" else "---:" for c in cols) + "|"]
        lines += ["| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def _atomic_write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _plot(results: Sequence[Any], path: Path) -> Path | None:
    """One panel per kind: perplexity per mode (all / leakage-filtered), QA EM and F1, ROUGE geo. mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[Any]] = {}
    for r in results:
        groups.setdefault(r.kind, []).append(r)
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), squeeze=False)
    for ax, (kind, rs) in zip(axes[0], groups.items(), strict=True):
        modes = [getattr(r, "label", "") or r.mode for r in rs]
        if kind == "perplexity":
            series = {"all": [r.ppl for r in rs]}
            if all(r.clean is not None and r.clean.tokens for r in rs):
                series[f"no leak (>={rs[0].min_overlap})"] = [r.clean.ppl for r in rs]
            ax.set_ylabel("perplexity (lower is better)")
        elif kind == "qa":
            series = {"EM": [r.em for r in rs], "F1": [r.f1 for r in rs]}
            ax.set_ylabel("score (%)")
        else:
            series = {"ROUGE geo. mean": [r.rouge_gm for r in rs]}
            ax.set_ylabel("score (%)")
        width = 0.8 / len(series)
        for j, (name, vals) in enumerate(series.items()):
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(modes))]
            bars = ax.bar(xs, vals, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(modes)), modes, rotation=15)
        ax.set_title(_TITLES[kind])
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _no_nan(x: Any) -> Any:
    """JSON has no NaN: empty subsets are written as null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def write_report(out_dir: str | os.PathLike, results: Sequence[Any], title: str = "pyretro evaluation",
                 plot: bool = True, notes: Sequence[str] = (), stem: str = "results") -> dict[str, Path]:
    """Writes ``{stem}.json`` (every result with its per-example predictions), ``{stem}.md`` and, with
    ``plot``, ``{stem}.png``; returns the paths by kind (``json``, ``markdown``, ``plot``)."""
    if not results:
        raise ValueError("results: nothing to report")
    out = Path(out_dir)
    paths = {
        "json": _atomic_write(out / f"{stem}.json", json.dumps(
            {"title": title, "notes": list(notes), "results": [_no_nan(r.to_dict()) for r in results]},
            indent=2, ensure_ascii=False, default=str) + "\n"),
        "markdown": _atomic_write(out / f"{stem}.md", to_markdown(results, title, notes)),
    }
    if plot:
        p = _plot(results, out / f"{stem}.png")
        if p is not None:
            paths["plot"] = p
    return paths
