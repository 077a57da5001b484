"""Rotary embedding benchmark: python bench/bench_rope.py [--device cuda] [--quick] [--dtype bfloat16]
(logic in pyretro/benchmarks/rope.py)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks import format_table
from pyretro.benchmarks.rope import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="short sequence, few repetitions (smoke test)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 (CUDA default), float16")
    for key in ("B", "S", "H", "D", "reps"):
        p.add_argument(f"--{key}", type=int, default=None)
    a = vars(p.parse_args())
    device, quick = a.pop("device"), a.pop("quick")
    rows = run(device, quick=quick, **{k: v for k, v in a.items() if v is not None})
    print(format_table(rows))
    print("\ncopy_frac = achieved GB/s / same-size device copy GB/s (GPU goal >= 0.8); ratio = eager / pyretro")
    for r in rows:
        print(f"{r['name']:<22} {r['shape']:<48} copy {r['copy_gb_s']:.1f} GB/s  copy_frac {r['copy_frac']:.2f}")


if __name__ == "__main__":
    main()
