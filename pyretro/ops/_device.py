"""What an op does with CUDA tensors when the compiled core has no CUDA kernels (a CPU-only wheel or build).

Policy (docs/release.md): the op runs its plain-PyTorch reference on the GPU (same semantics, slower) and
warns once per op, naming the fix. ``PYRETRO_CUDA_FALLBACK=error`` turns the fallback into a
``RuntimeError`` (for jobs that must not silently run slow kernels); ``=silent`` drops the warning.
"""

from __future__ import annotations

import os
import warnings

ENV = "PYRETRO_CUDA_FALLBACK"
_MODES = ("warn", "error", "silent")
_warned: set[str] = set()

FIX = ("install the CUDA wheel of pyretro, or rebuild from source with nvcc on PATH: "
       "`pip install pyretro --no-binary pyretro -C cmake.define.PYRETRO_CUDA=ON`")


class CudaNotCompiledWarning(RuntimeWarning):
    """A pyretro op ran its plain-PyTorch reference on CUDA tensors because the core lacks CUDA kernels."""


def fallback_mode() -> str:
    mode = os.environ.get(ENV, "warn").strip().lower() or "warn"
    if mode not in _MODES:
        raise ValueError(f"{ENV} must be one of {list(_MODES)}, got {mode!r}")
    return mode


def cuda_kernels_missing(op: str) -> None:
    """Call where ``op`` is about to run its reference on CUDA tensors because ``cuda_compiled()`` is False.

    Raises ``RuntimeError`` in ``error`` mode; otherwise warns once per op (unless ``silent``)."""
    mode = fallback_mode()
    msg = "pyretro was built without CUDA kernels (cuda_compiled=False; see `pyretro info`): "
    if mode == "error":
        raise RuntimeError(f"{msg}{op} got CUDA tensors. To run it on the GPU, {FIX}. "
                           f"(Unset {ENV} to fall back to the plain-PyTorch reference instead.)")
    if mode == "warn" and op not in _warned:
        _warned.add(op)
        warnings.warn(f"{msg}{op} on CUDA tensors runs the plain-PyTorch reference (same results, slower). "
                      f"For the fused kernels, {FIX}. Set {ENV}=error to make this an error.",
                      CudaNotCompiledWarning, stacklevel=3)
