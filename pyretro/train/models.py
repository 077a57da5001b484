"""Models for training: build GPT / Retro from config, start from saved weights (retro-fitting), freeze,
gate off for instruction tuning, activation checkpointing applied from outside the model classes."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from torch import nn

from pyretro.errors import ConfigError, MismatchError
from pyretro.model import GPT, RetroModel
from pyretro.train.config import ModelSection, SFTSection


def resolve_model_file(path: str | os.PathLike, what: str = "model.init_from") -> Path:
    """A ``.safetensors`` model file, a checkpoint directory (its model.safetensors) or a run directory
    (its latest checkpoint's) -> the model file. ``what`` names the setting in errors."""
    from pyretro.train.checkpoint import MODEL_FILE, latest_checkpoint

    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        ck = latest_checkpoint(p)
        if ck is not None:
            return ck / MODEL_FILE
        raise FileNotFoundError(f"{what}={str(p)!r}: no {MODEL_FILE} and no checkpoint in this directory")
    raise FileNotFoundError(f"{what}={str(p)!r} does not exist")


def build_model(cfg: ModelSection) -> GPT | RetroModel:
    """GPT or RetroModel from ``cfg`` (``kind`` None = "retro"). With ``init_from``: the saved model (of its own
    kind when ``kind`` is None); a saved GPT with ``kind = "retro"`` is retro-fitted (``RetroModel.from_gpt``: fresh encoder/CCA whose outputs start at zero, so the new model
    computes the GPT's function); a saved Retro with ``kind = "gpt"`` gives its decoder.
    ``freeze_decoder`` freezes the GPT part (DeepMind's RETRO-fitting)."""
    from pyretro.model.io import load

    if cfg.init_from:
        loaded = load(resolve_model_file(cfg.init_from))
        if cfg.kind == "gpt":
            model: GPT | RetroModel = loaded.decoder if isinstance(loaded, RetroModel) else loaded
        elif cfg.kind is None or isinstance(loaded, RetroModel):
            model = loaded
        else:
            model = RetroModel.from_gpt(loaded, copy.deepcopy(cfg.retro))
    elif cfg.kind == "gpt":
        model = GPT(copy.deepcopy(cfg.gpt))
    else:
        model = RetroModel(copy.deepcopy(cfg.gpt), copy.deepcopy(cfg.retro))
    if cfg.freeze_decoder:
        if not isinstance(model, RetroModel):
            raise ConfigError("model.freeze_decoder needs a Retro model")
        model.decoder.requires_grad_(False)
    return model


def prepare_sft(model: nn.Module, sft: SFTSection) -> None:
    """InstructRetro instruction tuning: gate 0, the decoder alone. Without retrieval the encoder/CCA get no
    gradient, so they are frozen (AdamW's weight decay then leaves them untouched, and DDP sees no unused
    trainable parameters). ``retrieval_on`` keeps (or restores) the gate and trains everything."""
    if not isinstance(model, RetroModel):
        return
    if sft.retrieval_on:
        if float(model.gate) == 0.0:
            model.set_gate(1.0)  # a model saved gated-off (an earlier SFT) gets its retrieval path back
        return
    if sft.gate_off:
        model.set_gate(0.0)
    model.encoder.requires_grad_(False)
    model.cca.requires_grad_(False)


def sync_model_config(cfg: ModelSection, model: nn.Module) -> None:
    """Records the architecture actually trained (e.g. loaded from init_from) in the run's config."""
    core = model.decoder if isinstance(model, RetroModel) else model
    cfg.gpt = copy.deepcopy(core.config)
    if isinstance(model, RetroModel):
        cfg.retro = copy.deepcopy(model.retro)
        cfg.kind = "retro"
    else:
        cfg.kind = "gpt"


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Wraps every attention / MLP of the decoder and the whole Retro encoder and CCA blocks in
    ``torch.distributed.algorithms._checkpoint.checkpoint_wrapper`` (non-reentrant): their activations are
    recomputed in backward. Returns the number of wrapped modules. State-dict keys are unchanged."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    from pyretro.model.gpt import Block

    def wrap(m: nn.Module) -> nn.Module:
        return checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT)

    n = 0
    for block in model.modules():
        if isinstance(block, Block):
            block.attn, block.mlp = wrap(block.attn), wrap(block.mlp)
            n += 2
    if isinstance(model, RetroModel):
        model.encoder = wrap(model.encoder)
        for j in range(len(model.cca)):
            model.cca[j] = wrap(model.cca[j])
        n += 1 + len(model.cca)
    return n


def check_vocab(model: nn.Module, vocab_size: int | None, what: str) -> None:
    """MismatchError when ``what`` (a tokenizer / store) has more token ids than the model embeds."""
    if vocab_size is None:
        return
    mv = (model.decoder if isinstance(model, RetroModel) else model).config.vocab_size
    if vocab_size > mv:
        raise MismatchError(f"{what} has vocab_size {vocab_size} > the model's vocab_size {mv}")


__all__ = [
    "apply_activation_checkpointing",
    "build_model",
    "check_vocab",
    "prepare_sft",
    "resolve_model_file",
    "sync_model_config",
]
