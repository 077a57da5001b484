"""Chunk store gather benchmark: python bench/bench_store.py [--quick] (logic in pyretro/benchmarks/store.py)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks.store import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small store, few repetitions (smoke test)")
    p.add_argument("--store-tokens", type=int, default=None, help="tokens in the benchmark store")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="pyretro CPU threads (default: torch's)")
    a = p.parse_args()
    over = {k: v for k, v in (("store_tokens", a.store_tokens), ("reps", a.reps), ("threads", a.threads))
            if v is not None}
    rows = run("cpu", quick=a.quick, **over)
    cols = ["name", "cache", "ids", "r", "store_GB", "threads", "time_ms", "GB/s", "baseline", "baseline_ms", "ratio"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))


if __name__ == "__main__":
    main()
