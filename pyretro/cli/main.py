"""Entry point of the ``pyretro`` console script."""

from __future__ import annotations

import argparse
import sys

from pyretro.cli._registry import register_all

COMMANDS = [
    "pyretro.cli.info",
    "pyretro.cli.db",
    "pyretro.cli.bench",
    "pyretro.cli.train",
    "pyretro.cli.eval",
    "pyretro.cli.generate",
    "pyretro.cli.demo",
]


def build_parser() -> argparse.ArgumentParser:
    from pyretro import __version__

    parser = argparse.ArgumentParser(prog="pyretro", description="Retrieval-enhanced language models.")
    parser.add_argument("--version", action="version", version=f"pyretro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_all(sub, COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:  # user errors: a message, not a traceback
        print(f"pyretro {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
