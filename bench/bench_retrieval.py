"""Retrieval benchmark: python bench/bench_retrieval.py [--quick] (logic in pyretro/benchmarks/retrieval.py)."""

from __future__ import annotations

import argparse
import json

from pyretro.benchmarks.retrieval import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small data, few chunks (smoke test)")
    p.add_argument("--num-chunks", type=int, default=None, help="database size for the index/query part")
    p.add_argument("--parts", default="embed,index", help="embed, index or both")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    over = {"parts": a.parts, **({"num_chunks": a.num_chunks} if a.num_chunks else {})}
    rows = run(a.device, quick=a.quick, **over)
    if a.json:
        print(json.dumps(rows, indent=1, default=str))
        return
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("name", "shape")}
        print(f"{row['name']:<42} {row.get('shape')}\n    " + "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()))


if __name__ == "__main__":
    main()
