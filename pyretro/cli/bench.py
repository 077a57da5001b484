"""``pyretro bench [kernels|store|ingest|retrieval|model|train]``: micro-benchmarks with same-run baselines."""

from __future__ import annotations

import argparse
import json


def _parse_overrides(text: str | None) -> dict[str, object]:
    """``"B=4,N=2048,dtype=bfloat16"`` -> {"B": 4, "N": 2048, "dtype": "bfloat16"}."""
    out: dict[str, object] = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise ValueError(f"--shapes: expected KEY=VALUE, got {part!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            try:
                out[k.strip()] = float(v)
            except ValueError:
                out[k.strip()] = v.strip()
    return out


def register(sub: argparse._SubParsersAction) -> None:
    from pyretro.benchmarks import GROUPS

    p = sub.add_parser("bench", help="run micro-benchmarks against same-run baselines")
    p.add_argument("group", nargs="?", default="kernels", choices=sorted(GROUPS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, help="e.g. float32, bfloat16 (kernel benchmarks)")
    p.add_argument("--shapes", default=None, help="overrides, e.g. B=2,N=1024,D=128")
    p.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke run)")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pyretro.benchmarks import format_table, run_group

    overrides = _parse_overrides(args.shapes)
    if args.dtype:
        overrides["dtype"] = args.dtype
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device")
    rows = run_group(args.group, device=args.device, quick=args.quick, **overrides)
    print(json.dumps(rows, indent=2, default=str) if args.json else format_table(rows))
    return 0
