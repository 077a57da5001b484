"""``pyretro train CONFIG [--section.key=value ...]`` and ``pyretro sft CONFIG [...]`` (docs/train.md).

Under torchrun: ``torchrun --nproc-per-node 8 -m pyretro.cli.main train CONFIG`` (DDP by default,
``--train.distributed=fsdp`` for FSDP2).
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    for name, helptext in (("train", "pretrain / retro-fit a GPT or Retro model from a config"),
                           ("sft", "instruction-tune (InstructRetro) from a config")):
        p = sub.add_parser(name, help=helptext,
                           description=f"{helptext}. Overrides: --section.key=value (e.g. --optim.lr=1e-4 "
                                       "--model.gpt.n_layers=6 --train.out_dir=runs/x); see docs/train.md.")
        p.add_argument("config", help="TOML / YAML / JSON config ('-' = the defaults, then the overrides)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="--section.key=value",
                       help="config overrides, e.g. --optim.lr=1e-4 --model.gpt.n_layers=6")
        p.set_defaults(func=_run, sft=name == "sft")


def _run(args: argparse.Namespace) -> int:
    from pyretro.train.config import load_config

    overrides = [o for o in args.overrides if o != "--print-config"]
    show = args.print_config or len(overrides) != len(args.overrides)
    cfg = load_config(None if args.config == "-" else args.config, overrides)
    if show:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from pyretro.train.loop import train

    result = train(cfg, sft=args.sft)
    from pyretro.train.dist import rank_is_main

    if rank_is_main():  # one summary line under torchrun
        parts = [f"steps={result.step}", f"run_dir={result.run_dir}"]
        if result.losses:
            last = max(result.losses)
            parts.append(f"loss={result.losses[last]:.4f}")
        parts += [f"{k}={v:.4g}" for k, v in result.val.items() if k.endswith(("/loss", "/ppl"))]
        if result.checkpoint is not None:
            parts.append(f"checkpoint={result.checkpoint}")
        print("  ".join(parts))
    return 0
