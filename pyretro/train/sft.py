"""InstructRetro instruction tuning: ``pyretro sft CONFIG`` / :func:`sft`.

Recipe (InstructRetro): start from a retro-fitted model (``model.init_from``), gate the retrieval path off
(``model.set_gate(0)``: the decoder alone), put the retrieved / given context passages into the prompt, and
train on the last assistant answer only (``loss_mask`` from ``pyretro.data.chat.ChatTemplate``); LR 5e-6,
batch 128, 1000 steps in the paper. ``[sft] retrieval_on = true`` keeps retrieval on instead, with the
sample's context passages as the neighbours of every chunk (not in the paper; packing is off then).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pyretro.errors import ConfigError
from pyretro.model import RetroModel
from pyretro.train.config import TrainConfig


def build_sft_datasets(cfg: TrainConfig, model: nn.Module) -> tuple[Any, dict[str, Any]]:
    """SFTDatasets (TRAIN-DATA) for ``data.sft_train`` / ``data.sft_val`` with the run's tokenizer."""
    from pyretro.train.sft_data import SFTDataset

    d, s = cfg.data, cfg.sft
    if not d.sft_train:
        raise ConfigError("data.sft_train: the instruction-tuning JSONL is required (or pass train_data=)")
    if not d.tokenizer:
        raise ConfigError("data.tokenizer: instruction tuning needs the tokenizer file (for the chat template)")
    retro = isinstance(model, RetroModel)
    nb = bool(retro and s.retrieval_on)
    kw: dict[str, Any] = {"seq_len": d.seq_len, "pack": d.pack and not nb, "all_turns": not s.answer_only,
                          "retrieval_neighbors": nb, "documents": d.sft_documents, "max_context": s.max_context}
    if nb:
        kw.update(k=model.retro.num_neighbors, r=model.retro.r, chunk_len=model.retro.chunk_len)
    train_ds = SFTDataset(d.sft_train, d.tokenizer, **kw)
    vals = {"sft_val": SFTDataset(d.sft_val, d.tokenizer, **kw)} if d.sft_val else {}
    return train_ds, vals


def sft(cfg: TrainConfig, *, model: nn.Module | None = None, train_data: Any = None, val_data: Any = None,
        on_step=None):
    """Instruction tuning = :func:`pyretro.train.loop.train` with ``sft=True`` (same result type)."""
    from pyretro.train.loop import train

    return train(cfg, model=model, train_data=train_data, val_data=val_data, sft=True, on_step=on_step)


__all__ = ["build_sft_datasets", "sft"]
