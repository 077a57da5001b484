"""``pyretro bench [kernels|store|ingest|retrieval|model|train|AREA]``: micro-benchmarks with same-run baselines.

Runs from an installed package (the code is ``pyretro.benchmarks``; ``bench/*.py`` are thin wrappers over it).
"""

from __future__ import annotations

import argparse
import json
import sys


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
    from pyretro.benchmarks import AREAS, GROUPS

    p = sub.add_parser("bench", help="run micro-benchmarks against same-run baselines",
                       description="Times each op against its baselines in the same process and prints times "
                                   "and ratios (ratio = baseline_ms / time_ms, > 1: pyretro faster).")
    p.add_argument("group", nargs="?", default="kernels", choices=[*GROUPS, *AREAS],
                   help="a group (kernels, store, ingest, retrieval, model, train) or one area (cca, rope, ...)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, help="e.g. float32, bfloat16 (kernel benchmarks)")
    p.add_argument("--shapes", default=None, help="overrides, e.g. B=2,N=1024,D=128 (see --list)")
    p.add_argument("--quick", action="store_true", help="small shapes and few repeats (a smoke run)")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.add_argument("--list", action="store_true", help="list groups, areas and their parameters, then exit")
    p.set_defaults(func=run)


def _header(args: argparse.Namespace) -> str:
    import pyretro

    info = pyretro.build_info()
    return (f"pyretro {info['version']} (cuda_compiled={info['cuda_compiled']}), torch {info.get('torch')}, "
            f"device={args.device}, {info['threads']} threads, {'quick' if args.quick else 'full'} shapes")


def run(args: argparse.Namespace) -> int:
    from pyretro.benchmarks import describe, format_table, run_group

    if args.list:
        print(describe())
        return 0
    overrides = _parse_overrides(args.shapes)
    if args.dtype:
        import torch

        if not isinstance(getattr(torch, args.dtype.removeprefix("torch."), None), torch.dtype):
            raise ValueError(f"--dtype: {args.dtype!r} is not a torch dtype (e.g. float32, bfloat16, float16)")
        overrides["dtype"] = args.dtype
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device")
    skipped: list[str] = []
    rows = run_group(args.group, device=args.device, quick=args.quick, skipped=skipped, **overrides)
    for area in skipped:
        print(f"pyretro bench: skipped {area!r}: pyretro.benchmarks.{area} is not in this install", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(_header(args))
        print(format_table(rows))
        print("ratio = baseline_ms / time_ms (> 1: pyretro faster than the baseline, measured in this run)")
    return 0
