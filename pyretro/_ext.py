"""Loads the compiled core ``pyretro._C``.

``PYRETRO_C_PATH`` points at another build of the extension (e.g. the sanitizer build used by the
C++-facing tests) and takes precedence over the installed one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
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


def _init_threads() -> None:
    try:
        import torch

        _C.set_num_threads(torch.get_num_threads())
    except ImportError:  # numpy-only use of the store
        _C.set_num_threads(0)


_init_threads()


@functools.cache
def cuda_compiled() -> bool:
    """Whether this build of the core holds the CUDA kernels."""
    return bool(_C.build_info()["cuda_compiled"])
