"""Chunked cross-attention benchmark: python bench/bench_cca.py [--device cuda] [--dtype bfloat16] [--quick]
[--bias 0] (logic in pyretro/benchmarks/cca.py; --bias 0 skips the position-bias rows)."""

from __future__ import annotations

import argparse

from pyretro.benchmarks import format_table
from pyretro.benchmarks.cca import run

H200_HBM_GB_S = 4800.0  # memory roofline of the GPU the project is checked on


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="short sequence, few repetitions (smoke test)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16 (CUDA default), float16")
    for key in ("B", "N", "chunk_len", "K", "R", "H", "D", "reps", "bias"):
        p.add_argument(f"--{key}", type=int, default=None)
    a = vars(p.parse_args())
    device, quick = a.pop("device"), a.pop("quick")
    rows = run(device, quick=quick, **{k: v for k, v in a.items() if v is not None})
    print(format_table(rows))
    print("\nratio = baseline_ms / fused_ms (> 1: fused faster); max_err = |baseline - fused| on the output")
    for r in rows:
        extra = f"  {r['gb_s'] / H200_HBM_GB_S:.1%} of H200 HBM" if device == "cuda" else ""
        print(f"{r['name']:<12} {r['shape']:<48} {r['tflops']:.2f} TFLOP/s  {r['gb_s']:.1f} GB/s{extra}"
              f"  max_err {r['max_err']:.2g}")


if __name__ == "__main__":
    main()
