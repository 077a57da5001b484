"""``pyretro demo``: corpus -> database -> GPT / Retro training -> instruction tuning -> evaluation -> report."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end Retro demo on a synthetic-knowledge corpus",
                       description="Generates a synthetic-knowledge corpus, builds the retrieval database, trains a "
                       "GPT and a Retro retro-fitted from it on the same budget, instruction-tunes both, evaluates "
                       "held-out perplexity and QA, and writes report.md + report.png. Rerunning skips finished "
                       "stages.")
    p.add_argument("--size", choices=["tiny", "small", "base"], default="small",
                   help="tiny: CI smoke run (~1-2 min); small: the default (< 10 min on 2 CPU cores); base: for a GPU")
    p.add_argument("--out", default="pyretro-demo", help="output directory (default: ./pyretro-demo)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=None, help="corpus / model seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a demo setting, e.g. --set pretrain_steps=400 (see pyretro.demo.DemoConfig)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _overrides(items: list[str]) -> dict:
    import json

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pyretro.demo import make_config, run_demo

    flags = {k: v for k, v in (("seed", args.seed), ("device", args.device)) if v is not None}  # not given
    cfg = make_config(args.size, **flags, **_overrides(args.set))
    t0 = time.perf_counter()
    res = run_demo(cfg, args.out, progress=not args.quiet, threads=args.threads)
    out = Path(args.out).resolve()
    ppl = res["stages"]["eval_ppl"]
    qa = res["stages"]["eval_qa"]["table"]
    print(f"\nheld-out perplexity: GPT {ppl['gpt']['ppl']:.2f}, Retro {ppl['retro']['ppl']:.2f} "
          f"(ratio {ppl['ratio_retro_over_gpt']:.3f}), Retro without retrieval {ppl['retro-decoder']['ppl']:.2f}")
    print("QA exact match on held-out entities: " + ", ".join(f"{k} {v['em']:.1f}%" for k, v in qa.items()))
    print(f"done in {time.perf_counter() - t0:.0f} s; report: {out / 'report.md'} (plot: {out / 'report.png'})")
    return 0
