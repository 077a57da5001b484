"""Device neighbour gather benchmark: python bench/bench_gather.py [--device cuda] [--quick]
(logic in pyretro/benchmarks/gather.py)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks import format_table
from pyretro.benchmarks.gather import DEFAULTS, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="small store, few repetitions (smoke test)")
    for key in DEFAULTS:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    a = vars(p.parse_args())
    device, quick = a.pop("device"), a.pop("quick")
    rows = run(device, quick=quick, **{k: v for k, v in a.items() if v is not None})
    print(format_table(rows))
    print("\ncopy_frac = achieved GB/s / same-size copy GB/s")
    for r in rows:
        print(f"{r['name']:<36} {r['shape']:<56} copy {r['copy_gb_s']:.1f} GB/s  copy_frac {r['copy_frac']:.2f}")


if __name__ == "__main__":
    main()
