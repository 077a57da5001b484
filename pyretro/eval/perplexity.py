"""Perplexity on held-out data (batch contract, docs/eval.md), with and without retrieval, and on the subset
of evaluation chunks that do not leak into their neighbours (RETRO paper's analysis).

A target token at position j of chunk u (u = j // chunk_len) is predicted, through CCA, from the neighbours
of chunk u - 1 (the first chunk reads none). Chunk u is *leaky* when it shares >= ``min_overlap`` contiguous
tokens with one of those neighbours (with continuation). ``clean`` = targets in non-leaky chunks, ``leaky``
= the rest; both are reported with their token counts, for GPT models too (same subsets, so GPT and Retro
compare on equal footing), whenever the data carries neighbours.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from pyretro.eval._models import default_mode, device_of, gate_for_eval
from pyretro.eval.leakage import leaky_chunks
from pyretro.model import GPT, RetroModel

__all__ = ["PerplexityResult", "SubsetStats", "evaluate_perplexity", "leaky_token_mask"]


@dataclass
class SubsetStats:
    nll: float  # token-weighted mean negative log-likelihood (nats)
    ppl: float
    tokens: int

    @classmethod
    def from_sums(cls, nll_sum: float, tokens: int) -> SubsetStats | None:
        if tokens == 0:
            return cls(float("nan"), float("nan"), 0)
        nll = nll_sum / tokens
        return cls(nll, math.exp(nll), tokens)


@dataclass
class PerplexityResult:
    mode: str
    nll: float
    ppl: float
    tokens: int
    samples: int
    clean: SubsetStats | None = None  # targets in chunks without leakage (None: the data has no neighbours)
    leaky: SubsetStats | None = None
    chunks: int = 0  # chunks checked for leakage (chunk 0 of each sample has no neighbours and is never leaky)
    leaky_chunks: int = 0
    min_overlap: int = 8
    settings: dict[str, Any] = field(default_factory=dict)

    kind = "perplexity"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind
        return d


def leaky_token_mask(tokens: torch.Tensor, neighbors: torch.Tensor, neighbor_mask: torch.Tensor | None,
                     chunk_len: int, min_overlap: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """(bool ``[B, S-1]`` over targets ``tokens[:, 1:]``: True where the target's chunk is leaky,
    bool ``[B, L]`` leaky flag per chunk). Chunk u >= 1 is compared with the neighbours of chunk u - 1."""
    B, S = tokens.shape
    L = neighbors.shape[1]
    m = int(chunk_len)
    n_chunks = min(L + 1, -(-S // m))  # chunks that have a predecessor with neighbours, plus chunk 0
    flags = np.zeros((B, max(n_chunks, 1)), dtype=bool)
    if n_chunks > 1:
        tok = tokens.detach().cpu()
        pad = n_chunks * m - S
        if pad > 0:  # a partial last chunk: padded with -1, which never matches
            tok = torch.cat([tok, torch.full((B, pad), -1, dtype=tok.dtype)], 1)
        ch = tok[:, m: n_chunks * m].reshape(B * (n_chunks - 1), m)
        nb = neighbors[:, : n_chunks - 1].detach().cpu()
        nb = nb.reshape(B * (n_chunks - 1), *nb.shape[2:])
        nm = None
        if neighbor_mask is not None:
            nm = neighbor_mask[:, : n_chunks - 1].detach().cpu()
            nm = nm.reshape(B * (n_chunks - 1), *nm.shape[2:])
        flags[:, 1:] = leaky_chunks(ch, nb, nm, min_overlap).reshape(B, n_chunks - 1)
    chunk_of_target = torch.arange(1, S) // m  # target j belongs to chunk j // m
    per_target = torch.zeros(B, S - 1, dtype=torch.bool)
    inside = chunk_of_target < flags.shape[1]
    per_target[:, inside] = torch.from_numpy(flags)[:, chunk_of_target[inside]]
    return per_target, flags[:, 1:n_chunks] if n_chunks > 1 else flags[:, :0]


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not items:
        raise ValueError("dataset: empty batch")
    keys = items[0].keys()
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys}


@torch.no_grad()
def evaluate_perplexity(
    model: GPT | RetroModel,
    dataset,
    *,
    batch_size: int = 8,
    retrieval: bool = True,
    retro_gate: float | None = None,
    min_overlap: int = 8,
    chunk_len: int | None = None,
    max_samples: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    mode: str | None = None,
) -> PerplexityResult:
    """Token-weighted mean NLL and perplexity of ``model`` over a map-style ``dataset`` (batch contract:
    ``tokens [S]``, optional ``loss_mask [S]``, ``neighbors [L, K, r]``, ``neighbor_mask``), without gradients.

    Retro with ``retrieval=True`` reads the data's neighbours (the gate follows ``retro_gate``, see
    ``resolve_gate``); ``retrieval=False`` runs its decoder alone. ``chunk_len`` (for the leakage subsets)
    defaults to the Retro model's, else ``S // L`` of the data.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    if max_samples is not None:
        n = min(n, int(max_samples))
    if n == 0:
        raise ValueError("dataset: no samples to evaluate")
    if hasattr(dataset, "get_batch"):  # RetroDataset / SFTDataset: one gather per batch
        loader = (dataset.get_batch(list(range(s, min(s + batch_size, n)))) for s in range(0, n, batch_size))
    else:
        data = dataset if n == len(dataset) else Subset(dataset, range(n))
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    n_batches = -(-n // batch_size)
    is_retro = isinstance(model, RetroModel)
    data_chunk = getattr(dataset, "chunk_len", None)
    if is_retro and retrieval and isinstance(data_chunk, int) and data_chunk != model.retro.chunk_len:
        raise ValueError(f"dataset: chunk_len {data_chunk} is not the Retro model's {model.retro.chunk_len} "
                         "(its neighbours would be read against the wrong chunks)")
    device = torch.device(device) if device is not None else device_of(model)
    mode = mode or default_mode(model, retrieval)
    sums = {"all": 0.0, "clean": 0.0, "leaky": 0.0}
    counts = {"all": 0, "clean": 0, "leaky": 0}
    n_chunks = n_leaky = 0
    has_neighbors = None
    was_training = model.training
    model.eval()
    try:
        gate_ctx = gate_for_eval(model, retro_gate) if is_retro and retrieval else nullcontext(None)
        with gate_ctx as gate:
            for batch in tqdm(loader, desc=f"ppl[{mode}]", unit="batch", total=n_batches, disable=not progress):
                tokens = batch["tokens"].long()
                if tokens.dim() != 2 or tokens.shape[1] < 2:
                    raise ValueError(f"dataset: 'tokens' must be [S] with S >= 2 per sample, got {list(tokens.shape[1:])}")
                lm = batch.get("loss_mask")
                lm = torch.ones_like(tokens, dtype=torch.bool) if lm is None else lm.bool()
                nb, nm = batch.get("neighbors"), batch.get("neighbor_mask")
                has_neighbors = nb is not None if has_neighbors is None else has_neighbors
                nb_shape = tuple(nb.shape) if nb is not None else ()
                if is_retro and retrieval:
                    if nb is None:
                        raise ValueError("dataset: retrieval=True needs 'neighbors' in the data (or use retrieval=False)")
                    if nb.dim() != 4 or nb.shape[1] > -(-tokens.shape[1] // model.retro.chunk_len):
                        raise ValueError(f"dataset: neighbors must be [L, K, r] with L = seq_len // chunk_len "
                                         f"({tokens.shape[1]} // {model.retro.chunk_len}), got "
                                         f"{list(nb.shape[1:])}: the data was chunked differently from the model")
                    logits = model(tokens.to(device), nb.long().to(device), None if nm is None else nm.to(device))
                elif is_retro:
                    logits = model(tokens.to(device), retrieval=False)
                else:
                    logits = model(tokens.to(device))
                targets = tokens[:, 1:].to(device)
                # row by row: the float32 upcast of the logits never holds the whole batch at once
                nll = torch.stack([F.cross_entropy(logits[b, :-1].float(), targets[b], reduction="none")
                                   for b in range(tokens.shape[0])]).double().cpu()
                target = lm[:, 1:]
                sums["all"] += float(nll[target].sum())
                counts["all"] += int(target.sum())
                if nb is not None:
                    m = chunk_len or (model.retro.chunk_len if is_retro else tokens.shape[1] // nb.shape[1])
                    leak_t, flags = leaky_token_mask(tokens, nb, nm, m, min_overlap)
                    n_chunks += flags.size + tokens.shape[0]  # + chunk 0 of each sample
                    n_leaky += int(flags.sum())
                    for name, sel in (("clean", target & ~leak_t), ("leaky", target & leak_t)):
                        sums[name] += float(nll[sel].sum())
                        counts[name] += int(sel.sum())
    finally:
        model.train(was_training)
    if counts["all"] == 0:
        raise ValueError("dataset: no target tokens (loss_mask is False everywhere)")
    allstats = SubsetStats.from_sums(sums["all"], counts["all"])
    res = PerplexityResult(
        mode=mode, nll=allstats.nll, ppl=allstats.ppl, tokens=counts["all"], samples=n,
        min_overlap=int(min_overlap),
        settings={"batch_size": batch_size, "retrieval": bool(retrieval and is_retro), "gate": gate},
    )
    if has_neighbors:
        res.clean = SubsetStats.from_sums(sums["clean"], counts["clean"])
        res.leaky = SubsetStats.from_sums(sums["leaky"], counts["leaky"])
        res.chunks, res.leaky_chunks = n_chunks, n_leaky
        res.settings["neighbors"], res.settings["neighbor_len"] = nb_shape[-2], nb_shape[-1]
    return res
