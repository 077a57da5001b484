"""One document per sample: a store's documents, each cropped or right-padded to ``seq_len`` (GPT samples).

Where :class:`~pyretro.train.data.RetroDataset` cuts the store's token stream into fixed windows (a document
may straddle two samples), this keeps each document whole in its own row, for data whose value lies in what
one document holds together: e.g. two documents about one subject joined into one record, where the second
is predictable only from the first (the demo's bursty pairs, which teach a model to copy from its context).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pyretro.errors import ConfigError, MismatchError
from pyretro.train.data import BatchItems, _as_store, store_pad_id

__all__ = ["DocumentDataset"]


class DocumentDataset(BatchItems, Dataset):
    """Sample ``d`` = document ``d`` of ``store``: ``tokens`` int64 [seq_len] (its first ``seq_len`` tokens,
    then the pad id), ``loss_mask`` bool [seq_len] (True on the document's tokens), ``position`` int64 (d)."""

    def __init__(self, store: Any, *, seq_len: int, pad_id: int | None = None) -> None:
        self.store = _as_store(store, "store")
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
            raise ConfigError(f"seq_len must be an int >= 2, got {seq_len!r}")
        if self.store.num_docs == 0:
            raise ConfigError(f"{self.store.path}: the store holds no documents")
        self.seq_len = int(seq_len)
        self.pad_id = store_pad_id(self.store) if pad_id is None else int(pad_id)
        self.chunk_len = self.store.chunk_len

    def __len__(self) -> int:
        return int(self.store.num_docs)

    @property
    def cropped_fraction(self) -> float:
        """Share of documents longer than ``seq_len`` (their tails are never trained on)."""
        lengths = np.diff(np.asarray(self.store.doc_offsets, dtype=np.int64))
        return float((lengths > self.seq_len).mean())

    def check_vocab(self, vocab_size: int) -> None:
        """``MismatchError`` if the store's tokens (or the pad id) may fall outside a model vocabulary."""
        v = self.store.vocab_size
        if v > int(vocab_size):
            raise MismatchError(f"{self.store.path}: store vocabulary {v} > the model's vocab_size {vocab_size}")
        if not 0 <= self.pad_id < vocab_size:
            raise MismatchError(f"pad_id {self.pad_id} is outside the model's vocabulary [0, {vocab_size})")

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(f"document index {int(idx[bad][0])} is out of range [0, {n})")
        tokens = np.full((len(idx), self.seq_len), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), self.seq_len), dtype=bool)
        for b, d in enumerate(idx):
            doc = np.asarray(self.store.document(int(d)))[: self.seq_len]
            tokens[b, : len(doc)] = doc
            mask[b, : len(doc)] = True
        return {"tokens": torch.from_numpy(tokens), "loss_mask": torch.from_numpy(mask),
                "position": torch.from_numpy(idx.copy())}

    def __repr__(self) -> str:
        return f"DocumentDataset({self.store.path}, docs={len(self)}, seq_len={self.seq_len})"
