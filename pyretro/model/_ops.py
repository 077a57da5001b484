"""The kernels the model runs on: ``pyretro.ops`` (fused) or their plain-PyTorch references.

``use_fused`` is a module-wide switch (and a context manager) so benchmarks and tests can compare both
paths on the very same model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_state = {"fused": True}


def use_fused() -> bool:
    return _state["fused"]


def set_use_fused(flag: bool) -> None:
    """True: model layers call ``pyretro.ops`` (fused kernels); False: the plain-PyTorch references."""
    _state["fused"] = bool(flag)


@contextlib.contextmanager
def ops_backend(fused: bool) -> Iterator[None]:
    old = _state["fused"]
    _state["fused"] = bool(fused)
    try:
        yield
    finally:
        _state["fused"] = old


def cca(q, k, v, key_mask, chunk_len: int, *, rotary: bool, rope_theta: float,
        bias: torch.Tensor | None = None) -> torch.Tensor:
    if _state["fused"]:
        from pyretro.ops import chunked_cross_attention

        return chunked_cross_attention(q, k, v, key_mask, chunk_len, rotary=rotary, rope_theta=rope_theta, bias=bias)
    from pyretro.ops.reference.cca import chunked_cross_attention_ref

    return chunked_cross_attention_ref(q, k, v, key_mask, chunk_len, rotary=rotary, rope_theta=rope_theta, bias=bias)


def rope(x, positions, *, theta: float, rotary_dim: int, interleaved: bool) -> torch.Tensor:
    """Rotary on ``x [..., S, H, D]`` at integer ``positions [S]`` or ``[B, S]`` (first ``rotary_dim`` dims)."""
    if _state["fused"]:
        from pyretro.ops import rope as fused_rope

        try:
            return fused_rope(x, positions, theta=theta, rotary_dim=rotary_dim, interleaved=interleaved)
        except NotImplementedError:  # the fused op is not built in this tree yet
            pass
    from pyretro.ops.reference.rope import rope_reference

    return rope_reference(x, positions, theta=theta, rotary_dim=rotary_dim, interleaved=interleaved)
