"""Loads the compiled core ``pyretro._C``.

``PYRETRO_C_PATH`` points at another build of the extension (e.g. the sanitizer build used by the
C++-facing tests) and takes precedence over the installed one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
import threading
from types import ModuleType


def _load() -> ModuleType:
    path = os.environ.get("PYRETRO_C_PATH")
    if path:
        spec = importlib.util.spec_from_file_location("pyretro._C", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"PYRETRO_C_PATH={path!r} is not a loadable extension module")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["pyretro._C"] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module("pyretro._C")
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "pyretro's compiled core (pyretro._C) is missing: install the package with "
            "`pip install .` (or run tools/dev_build.sh in a source checkout)"
        ) from e


_C = _load()


# Thread count of the CPU kernels: follows torch.get_num_threads() at every call (so torch.set_num_threads, and
# DataLoader workers, which set 1, apply to pyretro too) until pyretro.set_num_threads pins a count.
_pinned = False
_synced = -1
try:
    import torch as _torch
except ImportError:  # numpy-only use of the store: all cores
    _torch = None


_lock = threading.Lock()  # a pin from another Python thread must not be overwritten by a sync in flight


def sync_threads() -> None:
    """Called before each CPU kernel: applies torch's current thread count unless a count is pinned."""
    global _synced
    if _pinned or _torch is None:
        return
    n = _torch.get_num_threads()
    if n != _synced:
        with _lock:
            if not _pinned:
                _C.set_num_threads(n)
                _synced = n


def pin_threads(n: int | None) -> None:
    """``n`` >= 1: pyretro's kernels use ``n`` threads from now on; None or 0: follow torch again."""
    global _pinned, _synced
    with _lock:
        if n is not None and int(n) > 0:
            _pinned = True
            _C.set_num_threads(int(n))
            return
        _pinned, _synced = False, -1
        if _torch is None:
            _C.set_num_threads(0)
    sync_threads()


@contextlib.contextmanager
def pinned_threads(n: int | None):
    """Temporarily pins ``n`` threads (None: leave as is), then restores the previous setting."""
    before = _C.get_num_threads() if _pinned else None
    if n is not None:
        pin_threads(n)
    try:
        yield
    finally:
        pin_threads(before)


pin_threads(None)


@functools.cache
def cuda_compiled() -> bool:
    """Whether this build of the core holds the CUDA kernels."""
    return bool(_C.build_info()["cuda_compiled"])
