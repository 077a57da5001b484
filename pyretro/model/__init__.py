"""Retro / InstructRetro models on pyretro's ops: GPT decoder, Retro encoder, chunked cross-attention.

    from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel
    gpt = GPT(GPTConfig(vocab_size=32000, n_layers=12))
    retro = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=64, num_neighbors=2))
    logits = retro(tokens, neighbors)           # tokens [B, N], neighbors [B, L, K, r]
"""

from pyretro.model._ops import ops_backend, set_use_fused
from pyretro.model.config import GPTConfig, RetroConfig, default_cca_layers
from pyretro.model.gpt import GPT, lm_loss
from pyretro.model.retro import RetroModel

__all__ = [
    "GPT",
    "GPTConfig",
    "RetroConfig",
    "RetroModel",
    "default_cca_layers",
    "lm_loss",
    "ops_backend",
    "set_use_fused",
]
