"""torch.library registration of the fused CCA kernels (filled in as the kernels land)."""

from __future__ import annotations

import torch

from pyretro.ops.reference.cca import chunked_cross_attention_ref


def dispatch(q: torch.Tensor, k, v, key_mask, chunk_len: int, scale: float, rotary: bool, theta: float):
    return chunked_cross_attention_ref(q, k, v, key_mask, chunk_len, scale=scale, rotary=rotary, rope_theta=theta)
