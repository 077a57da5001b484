"""In-context copying probe: is a random token sequence easier to predict the second time the model reads it?

Language models lift spans out of their prompt with attention that finds and copies earlier tokens (induction
heads). A model without them scores the same loss on both copies; one with them predicts the repeat almost
exactly. (A narrow, learned lookup, e.g. of one kind of fact, can work without them: it is a general check.)
Random tokens keep memorized text out of it. The demo reports it next to QA: its small models, trained on a
corpus whose facts can be memorized, never formed such heads (docs/demo.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pyretro.model import lm_loss

__all__ = ["CopyProbe", "copy_probe"]


@dataclass
class CopyProbe:
    first_nll: float  # mean next-token NLL (nats) over the first copy, its first token excluded
    second_nll: float  # ... over the second copy, its first token excluded (each was seen `length` tokens earlier)

    @property
    def gain(self) -> float:
        """Nats per token the repeat saves; ~0 = no in-context copying, ~first_nll = perfect copying."""
        return self.first_nll - self.second_nll


@torch.no_grad()
def copy_probe(model: nn.Module, *, low: int = 0, high: int | None = None, length: int = 64, batch: int = 16,
               seed: int = 0) -> CopyProbe:
    """Feeds ``batch`` rows of ``length`` random token ids from ``[low, high)`` (default: the model's vocabulary;
    raise ``low`` past special tokens), each row twice in a row, and returns the mean NLL of each copy. A
    ``RetroModel`` runs its decoder alone (no neighbours)."""
    vocab = int(model.config.vocab_size)
    high = vocab if high is None else int(high)
    if not 0 <= low < high <= vocab:
        raise ValueError(f"copy_probe: token range [{low}, {high}) must be non-empty and inside the vocabulary "
                         f"[0, {vocab})")
    if length < 2 or batch < 1:
        raise ValueError(f"copy_probe: length must be >= 2 and batch >= 1, got length={length}, batch={batch}")
    max_len = getattr(model.config, "max_seq_len", None)
    if max_len is not None and 2 * length > max_len:
        raise ValueError(f"copy_probe: 2 * length = {2 * length} exceeds the model's max_seq_len {max_len}")
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(low, high, (batch, length), generator=g)
    x = torch.cat([half, half], 1).to(dev)
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        model.train(was_training)
    # targets of the first copy: tokens 1..L-1; of the second: L+1..2L-1 (its first token, where the repeat
    # starts, cannot be foreseen)
    pos = torch.arange(2 * length, device=dev).expand(batch, -1)
    first = lm_loss(logits, x, (pos >= 1) & (pos < length))
    second = lm_loss(logits, x, pos > length)
    return CopyProbe(float(first), float(second))
