from __future__ import annotations

import argparse
import importlib


def register_all(subparsers: argparse._SubParsersAction, modules: list[str]) -> None:
    """Calls ``register(subparsers)`` of each module that exists (commands land one module at a time)."""
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register(subparsers)
