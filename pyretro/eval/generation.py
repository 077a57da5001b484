"""Batched greedy generation for evaluation in each model mode, prompts through the shared ChatTemplate.

A prompt is ``ChatTemplate.prompt_text(question, context)`` (the instruction-tuning template). Mode ``retro``
also passes the context passages as encoder neighbours ``[B, K, r]`` for every chunk (InstructRetro), each
passage tokenized and cut into pieces of ``r`` tokens; ``retro-retrieve`` asks a retriever at every chunk.
Prompts longer than ``max_seq_len - max_new_tokens`` drop passages from the end, then cut the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyretro.data.chat import ChatTemplate
from pyretro.data.tokenizer import fingerprint, load_tokenizer, vocab_size
from pyretro.errors import MismatchError
from pyretro.eval._models import check_mode, gate_for_eval
from pyretro.model import GPT, RetroModel
from pyretro.model.generate import generate

__all__ = ["check_vocab", "generate_texts", "passage_neighbors", "retriever_fn"]

Item = tuple[str, Sequence[str]]  # (question or instruction, context passages)


def check_vocab(model: GPT | RetroModel, tokenizer) -> Any:
    """Loads ``tokenizer`` (object or path) and checks that its ids fit the model's vocabulary."""
    tok = load_tokenizer(tokenizer)
    v = vocab_size(tok)
    if v > model.config.vocab_size:
        raise MismatchError(f"tokenizer has {v} ids but the model's vocab_size is {model.config.vocab_size}: "
                            "wrong tokenizer for this model?")
    return tok


def passage_neighbors(tokenizer, passages: Sequence[Sequence[str]], r: int, max_neighbors: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbours ``[B, K, r]`` (-1 = padding) and mask from each row's passages: passages tokenized, cut into
    pieces of ``r`` tokens, the first ``max_neighbors`` pieces kept; K = the most any row has (>= 1)."""
    rows = []
    for ps in passages:
        pieces: list[list[int]] = []
        for p in ps:
            ids = tokenizer.encode(p, add_special_tokens=False).ids
            pieces += [ids[i: i + r] for i in range(0, len(ids), r)]
            if len(pieces) >= max_neighbors:
                break
        rows.append(pieces[:max_neighbors])
    K = max(1, max(len(p) for p in rows))
    nb = torch.full((len(rows), K, r), -1, dtype=torch.long)
    for b, pieces in enumerate(rows):
        for k, ids in enumerate(pieces):
            nb[b, k, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return nb, nb >= 0


def retriever_fn(retriever, k: int, tokenizer=None, r: int | None = None) -> Callable:
    """``generate``'s retriever callback from a :class:`pyretro.retrieval.Retriever` (token chunks -> the ``k``
    nearest database chunks, gathered with their continuations as ``r`` tokens + mask) or any callable already
    following that contract."""
    if not hasattr(retriever, "query_chunks"):
        if not callable(retriever):
            raise TypeError(f"retriever: expected a pyretro.retrieval.Retriever or a callable, got {type(retriever)}")
        return retriever
    store = retriever.store
    store_fp = getattr(store, "tokenizer_fingerprint", None)
    if tokenizer is not None and store_fp and store_fp != fingerprint(tokenizer):
        raise MismatchError(f"retriever: the store {store.path} was tokenized with another tokenizer than the "
                            "model's")

    def fn(chunk_tokens: torch.Tensor):
        ids = retriever.query_chunks(chunk_tokens.detach().cpu().numpy(), k)
        toks, mask = store.gather(ids, r=r)
        return torch.as_tensor(np.asarray(toks)).long(), torch.as_tensor(np.asarray(mask)).bool()
    return fn


def _fit(template: ChatTemplate, tok, q: str, ctx: Sequence[str], system: str | None, limit: int,
         where: str) -> tuple[list[int], list[str]]:
    """Prompt ids within ``limit`` tokens: drop passages from the end, then cut the last remaining one."""
    ctx = list(ctx)
    ids = template.encode_prompt(q, ctx, system)
    while len(ids) > limit and len(ctx) > 1:
        ctx.pop()
        ids = template.encode_prompt(q, ctx, system)
    if len(ids) > limit and ctx:
        p_ids = tok.encode(ctx[0], add_special_tokens=False).ids
        over = len(ids) - limit
        keep = max(0, len(p_ids) - over - 2)  # re-tokenizing a cut text can merge differently: leave slack
        while True:
            ctx = [tok.decode(p_ids[:keep])] if keep > 0 else []
            ids = template.encode_prompt(q, ctx, system)
            if len(ids) <= limit or keep == 0:
                break
            keep = max(0, keep - max(1, len(ids) - limit))
    if len(ids) > limit:
        raise ValueError(f"{where}: the prompt needs {len(ids)} tokens without context, more than "
                         f"max_seq_len - max_new_tokens = {limit}")
    return ids, ctx


def generate_texts(
    model: GPT | RetroModel,
    tokenizer,
    items: Sequence[Item],
    *,
    mode: str,
    ids: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    max_neighbors: int = 5,
    retriever=None,
    num_neighbors: int | None = None,
    retro_gate: float | None = None,
    system: str | None = None,
    prompt_context: bool = True,
    progress: bool = True,
    generate_fn: Callable = generate,
) -> tuple[list[str], dict[str, Any]]:
    """Greedy answers (decoded, special tokens skipped, stripped) for ``(question, context)`` items in
    ``mode``; returns them in input order with a dict of what was done (gate, truncations).
    ``prompt_context=False`` leaves the passages out of the prompt (closed book; mode ``retro`` still gives
    them to the encoder: retrieval through the encoder alone)."""
    check_mode(mode)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    is_retro = isinstance(model, RetroModel)
    device = next(model.parameters()).device
    if (mode == "gpt") == is_retro:
        raise TypeError(f"mode {mode!r} needs a {'GPT' if mode == 'gpt' else 'RetroModel'}, got {type(model).__name__}")
    if mode == "retro-retrieve" and retriever is None:
        raise ValueError("mode 'retro-retrieve' needs a retriever")
    tok = check_vocab(model, tokenizer)
    template = ChatTemplate(tok)
    stops = template.stop_ids()
    limit = model.config.max_seq_len - max_new_tokens
    ids = list(ids) if ids is not None else [str(i) for i in range(len(items))]
    prompts, contexts, truncated = [], [], 0
    for (q, ctx), ex_id in zip(items, ids, strict=True):
        if prompt_context:
            p, kept = _fit(template, tok, q, ctx, system, limit, f"example {ex_id}")
            truncated += kept != list(ctx)
        else:
            p, _ = _fit(template, tok, q, (), system, limit, f"example {ex_id}")
            kept = list(ctx)
        prompts.append(p)
        contexts.append(kept)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths share a batch
    out: list[str] = [""] * len(prompts)
    r = model.retro.r if is_retro else 0
    k = num_neighbors or (model.retro.num_neighbors if is_retro else 0)
    rfn = retriever_fn(retriever, k, tok, r) if mode == "retro-retrieve" else None
    gate_ctx = gate_for_eval(model, retro_gate) if mode in ("retro", "retro-retrieve") else nullcontext(None)
    with gate_ctx as gate:
        bar = tqdm(total=len(prompts), desc=f"generate[{mode}]", unit="ex", disable=not progress)
        for s in range(0, len(order), batch_size):
            rows = order[s: s + batch_size]
            kw: dict[str, Any] = {}
            if mode == "retro":
                nb, nm = passage_neighbors(tok, [contexts[i] for i in rows], r, max_neighbors)
                kw.update(neighbors=nb.to(device), neighbor_mask=nm.to(device))
            elif mode == "retro-decoder":
                kw["retrieval"] = False
            elif mode == "retro-retrieve":
                kw["retriever"] = rfn
            new = generate_fn(model, [prompts[i] for i in rows], max_new_tokens=max_new_tokens,
                              stop_tokens=stops, pad_id=template.pad_id, **kw)
            for i, toks in zip(rows, new, strict=True):
                out[i] = tok.decode(list(toks), skip_special_tokens=True).strip()
            bar.update(len(rows))
        bar.close()
    info = {"mode": mode, "gate": gate, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
            "prompt_context": prompt_context, "truncated_prompts": truncated}
    if mode == "retro":
        info["max_neighbors"], info["neighbor_len"] = max_neighbors, r
    if mode == "retro-retrieve":
        info["num_neighbors"] = k
    return out, info

