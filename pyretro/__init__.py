"""pyretro: retrieval-enhanced language models (Retro, InstructRetro) with a fused C++/CUDA core."""

from __future__ import annotations

from typing import Any

from pyretro._version import __version__


def build_info() -> dict[str, Any]:
    """How the compiled core was built, and what this process can use."""
    import platform

    from pyretro._ext import _C

    info: dict[str, Any] = dict(_C.build_info())
    info["core_version"] = info.get("version")  # a stale in-place build shows up as a different version
    info["version"] = __version__
    from pyretro._ext import sync_threads

    sync_threads()
    info["threads"] = _C.get_num_threads()
    info["python"] = platform.python_version()
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda_available"] = bool(torch.cuda.is_available())
    except ImportError:
        info["torch"] = None
    return info


def set_num_threads(n: int | None) -> None:
    """Pins the threads of pyretro's CPU kernels to ``n``; None or 0 returns to the default, which follows
    ``torch.get_num_threads()`` at every call (``torch.set_num_threads`` and DataLoader workers apply)."""
    from pyretro._ext import pin_threads

    pin_threads(n)


__all__ = ["__version__", "build_info", "set_num_threads"]
