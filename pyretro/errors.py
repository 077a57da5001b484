"""pyretro's exceptions. Each subclasses the builtin a caller would expect, so ``except ValueError`` works."""

from __future__ import annotations


class PyretroError(Exception):
    """Base class of pyretro's own exceptions."""


class StoreError(PyretroError, ValueError):
    """A chunk store (or a file in it) is missing, truncated, corrupt or of another version."""


class MismatchError(PyretroError, ValueError):
    """Two artifacts that must belong together do not (store vs neighbour table, tokenizer vs model, ...)."""


class ConfigError(PyretroError, ValueError):
    """An invalid configuration value."""
