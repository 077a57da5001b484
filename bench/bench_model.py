"""Model benchmark: python bench/bench_model.py [--quick] (logic in pyretro/benchmarks/model.py)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks.model import DEFAULTS, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small model, few repetitions (smoke test)")
    for key, val in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(val), default=None)
    a = vars(p.parse_args())
    quick = a.pop("quick")
    over = {k: v for k, v in a.items() if v is not None}
    rows = run("cpu", quick=quick, **over)
    cols = ["name", "time_ms", "tok_s", "baseline_ms", "ratio", "cost_x", "flops_x", "shape"]
    print(" | ".join(cols))
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
