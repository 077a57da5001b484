"""``pyretro db ...``: build a retrieval database (ingest, embed, index, query, build)."""

from __future__ import annotations

import argparse

from pyretro.cli._registry import register_all

DB_COMMANDS = ["pyretro.cli.db_ingest", "pyretro.cli.db_retrieval"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="build a retrieval database and neighbour tables")
    dbsub = p.add_subparsers(dest="db_command", metavar="STEP")
    register_all(dbsub, DB_COMMANDS)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
