"""Ingest throughput and peak RSS (logic in pyretro/benchmarks/ingest.py). Usage: bench_ingest.py [--quick]."""

from __future__ import annotations

import argparse
import json

from pyretro.benchmarks.ingest import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--corpus-mb", type=float)
    ap.add_argument("--rss-copies", type=int)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    over = {k: v for k, v in {"corpus_mb": a.corpus_mb, "rss_copies": a.rss_copies}.items() if v is not None}
    rows = run(quick=a.quick, **over)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        extra = (f"peak RSS {r['peak_rss_total_mb']:.0f} MB total / {r['peak_rss_single_mb']:.0f} MB max process, "
                 f"corpus/RSS {r['ratio']:.1f}x" if "peak_rss_total_mb" in r
                 else f"baseline {r['baseline_tokens_per_s'] / 1e6:.2f} Mtok/s, ratio {r['ratio']:.2f}")
        print(f"{r['name']:<20} {r['shape']:<48} {r['time_ms'] / 1e3:7.1f} s  {r['tokens_per_s'] / 1e6:6.2f} Mtok/s  "
              f"{r['MB_per_s']:6.2f} MB/s  {extra}")


if __name__ == "__main__":
    main()
