"""Training data loader benchmark: python bench/bench_train_data.py [--quick] [--batches N] ...
(logic in pyretro/benchmarks/train_data.py)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks import format_table
from pyretro.benchmarks.train_data import DEFAULTS, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model step runs")
    p.add_argument("--quick", action="store_true", help="small store, few batches (smoke test)")
    for key in DEFAULTS:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    a = vars(p.parse_args())
    device, quick = a.pop("device"), a.pop("quick")
    rows = run(device, quick=quick, **{k: v for k, v in a.items() if v is not None})
    print(format_table(rows))
    print("\nheadroom = model train-step ms / loader ms per batch (> 1: the loader is not the bottleneck)")
    for r in rows:
        print(f"{r['name']:<24} {r['shape']:<52} {r['samples_s']:9.1f} samples/s {r['tokens_s']:11.0f} tok/s | "
              f"{r['model']}: {r['model_ms']:8.1f} ms ({r['model_tokens_s']:7.0f} tok/s)  headroom {r['headroom']:.0f}x | "
              f"CPU ms: loader {r['cpu_ms']:.2f} model {r['model_cpu_ms']:.0f} headroom {r['cpu_headroom']:.0f}x")


if __name__ == "__main__":
    main()
