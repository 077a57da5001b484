"""Training benchmark: python bench/bench_train.py [--quick] (logic in pyretro/benchmarks/train.py)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks.train import DEFAULTS, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small model, few steps (smoke test)")
    p.add_argument("--device", default="cpu")
    for key, val in DEFAULTS.items():
        if isinstance(val, bool):
            p.add_argument(f"--{key.replace('_', '-')}", action="store_true", default=None)
        else:
            p.add_argument(f"--{key.replace('_', '-')}", type=type(val), default=None)
    a = vars(p.parse_args())
    quick, device = a.pop("quick"), a.pop("device")
    over = {k: v for k, v in a.items() if v is not None}
    rows = run(device, quick=quick, **over)
    cols = ["name", "time_ms", "cpu_ms", "tok_s", "tok_s_cpu", "baseline_ms", "ratio", "cost_x", "cost_x_cpu", "shape"]
    print(" | ".join(cols))
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append(f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)))
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
