"""Instruction-tuning data (InstructRetro): JSONL conversations -> chat template -> answer-only loss, packed.

Each record is anything :meth:`pyretro.data.chat.Conversation.from_dict` accepts (``messages`` with
system/user/assistant turns and optional ``context`` passages, or a QA record). :class:`SFTDataset` renders
it with :class:`~pyretro.data.chat.ChatTemplate` (loss on the last assistant answer + its end token), cuts
over-long samples (context passages first, then the left of the prompt, never the answer) and packs short
samples into ``seq_len`` rows (best-fit decreasing, deterministic). With ``retrieval_neighbors=True`` each
conversation is one row (no packing) and its context passages also become the neighbours of every chunk.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pyretro.data.chat import ChatTemplate, Conversation
from pyretro.errors import ConfigError
from pyretro.train.data import BatchItems

__all__ = [
    "SFTDataset",
    "encode_conversation",
    "load_conversations",
    "load_documents",
    "pack_lengths",
    "passage_neighbors",
    "read_jsonl",
]


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; ``ValueError`` naming ``file:line`` for bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (JSONL expected)")
    with open(path, encoding="utf-8-sig") as f:  # tolerate a byte-order mark
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _records(source: Any) -> Iterator[tuple[str, Any]]:
    """(where, record) from JSONL path(s), dicts or Conversations; ``where`` names the file and line."""
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    for j, item in enumerate(source):
        if isinstance(item, (str, os.PathLike)):
            for lineno, obj in read_jsonl(item):
                yield f"{item}:{lineno}", obj
        else:
            yield f"record {j}", item


def load_documents(documents: Any) -> dict[str, str] | None:
    """``{doc id: text}`` from a mapping or a JSONL of ``{"id", "text"}`` records (a synthetic corpus'
    ``documents.jsonl``), to resolve QA records' ``context_ids``."""
    if documents is None:
        return None
    if isinstance(documents, dict):
        return {str(k): str(v) for k, v in documents.items()}
    out = {}
    for lineno, r in read_jsonl(documents):
        if "id" not in r or "text" not in r:
            raise ValueError(f"{documents}:{lineno}: a document needs 'id' and 'text'")
        out[str(r["id"])] = str(r["text"])
    return out


def _conversation(where: str, rec: Any, docs: dict[str, str] | None = None,
                  max_context: int | None = None) -> Conversation:
    if isinstance(rec, Conversation):
        conv = rec
    elif not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a conversation dict, got {type(rec).__name__}")
    else:
        try:
            conv = Conversation.from_dict(rec)
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise ValueError(f"{where}: {e}") from None
        if not conv.context and rec.get("context_ids"):
            if docs is None:
                raise ValueError(f"{where}: 'context_ids' need the documents (pass documents=)")
            missing = [d for d in rec["context_ids"] if str(d) not in docs]
            if missing:
                raise ValueError(f"{where}: context_ids not among the documents: {missing[:5]}")
            conv.context = [docs[str(d)] for d in rec["context_ids"]]
    if max_context is not None and len(conv.context) > max_context:
        conv = replace(conv, context=list(conv.context[:max_context]))
    return conv


def load_conversations(source: Any, documents: Any = None, max_context: int | None = None) -> list[Conversation]:
    """Conversations of JSONL file(s) (or dicts); errors name the file and line. ``documents`` resolves
    ``context_ids`` (see :func:`load_documents`); ``max_context`` keeps the first passages only."""
    docs = load_documents(documents)
    return [_conversation(w, r, docs, max_context) for w, r in _records(source)]


def _answer_start(mask: np.ndarray) -> int:
    """Start of the last run of loss tokens (the final answer)."""
    nz = np.flatnonzero(~mask[::-1])
    return 0 if len(nz) == 0 else len(mask) - int(nz[0])


def encode_conversation(template: ChatTemplate, conv: Conversation, seq_len: int, *,
                        all_turns: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int64 [n <= seq_len] and loss mask bool [n] of one conversation, cut to fit ``seq_len``:
    first the context passages (the last passage is shortened, then dropped, and so on), then tokens from
    the left of the prompt; the final assistant marker and answer are kept whole. ``ValueError`` if they
    alone exceed ``seq_len`` or the answer is empty."""
    ids, mask, _ = _encode_fit(template, conv, seq_len, all_turns)
    return ids, mask


def _encode_fit(template: ChatTemplate, conv: Conversation, seq_len: int,
                all_turns: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    ids, mask = template.encode(conv, all_turns=all_turns)
    if len(ids) <= seq_len and mask.any():
        return ids, mask, False
    if not mask.any():
        raise ValueError("empty answer: the conversation has no loss tokens")
    tok = template.tokenizer
    head = len(tok.encode(template.markers["assistant"], add_special_tokens=False).ids)
    protected = len(ids) - (_answer_start(mask) - head)
    if protected > seq_len:
        raise ValueError(f"the answer ({protected} tokens with its assistant marker) does not fit seq_len {seq_len}")
    ctx = list(conv.context)
    while len(ids) > seq_len and ctx:
        p_ids = tok.encode(ctx[-1], add_special_tokens=False).ids
        keep = len(p_ids) - (len(ids) - seq_len)
        while True:
            if keep <= 0:
                ctx.pop()
                ids, mask = template.encode(replace(conv, context=list(ctx)), all_turns=all_turns)
                break
            ctx[-1] = tok.decode(p_ids[:keep])
            ids, mask = template.encode(replace(conv, context=list(ctx)), all_turns=all_turns)
            if len(ids) <= seq_len:
                break
            keep -= max(1, len(ids) - seq_len)  # re-tokenization may differ by a token or two; always shrinks
    if len(ids) > seq_len:  # the left of the prompt (system text, earlier turns, question start)
        ids, mask = ids[len(ids) - seq_len:], mask[len(mask) - seq_len:]
    return ids, mask, True


def pack_lengths(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Packs items of ``lengths`` into rows of at most ``seq_len`` (best-fit decreasing: longest first, each
    into the fullest row it fits, ties by index). Deterministic. Returns rows of item indices, each row in
    increasing index order, rows ordered by their first item."""
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    caps: list[int] = []  # sorted distinct remaining capacities of open rows
    by_cap: dict[int, list[int]] = {}
    rows: list[list[int]] = []
    for i in order:
        s = int(lengths[i])
        if not 0 < s <= seq_len:
            raise ValueError(f"item {i} has length {s}, outside (0, {seq_len}]")
        j = bisect.bisect_left(caps, s)
        if j < len(caps):
            c = caps[j]
            b = by_cap[c].pop()
            if not by_cap[c]:
                del by_cap[c]
                caps.pop(j)
        else:
            b, c = len(rows), seq_len
            rows.append([])
        rows[b].append(i)
        left = c - s
        if left > 0:
            if left not in by_cap:
                by_cap[left] = []
                bisect.insort(caps, left)
            by_cap[left].append(b)
    return sorted((sorted(r) for r in rows), key=lambda r: r[0])


def passage_neighbors(tokenizer: Any, passages: Sequence[str], k: int, r: int,
                      pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Context passages as neighbours: tokens int64 [k, r] and mask bool [k, r]. Passage j (of the first
    ``k``) is tokenized without special tokens and cut / right-padded to ``r``; missing ones are all padding.
    The same construction serves instruction tuning with retrieval on and generation (``neighbors=[B, k, r]``)."""
    if isinstance(tokenizer, ChatTemplate):
        tokenizer = tokenizer.tokenizer
    out = np.full((k, r), pad_id, dtype=np.int64)
    mask = np.zeros((k, r), dtype=bool)
    for j, p in enumerate(list(passages)[:k]):
        t = tokenizer.encode(p, add_special_tokens=False).ids[:r]
        out[j, :len(t)] = t
        mask[j, :len(t)] = True
    return out, mask


def _as_template(tokenizer: Any) -> ChatTemplate:
    if isinstance(tokenizer, ChatTemplate):
        return tokenizer
    from pyretro.data.tokenizer import load_tokenizer

    return ChatTemplate(load_tokenizer(tokenizer))


class SFTDataset(BatchItems, Dataset):
    """Instruction-tuning rows of ``seq_len`` tokens (map-style, batch contract).

    ``source``: a JSONL path, a list of paths, or a list of dicts / ``Conversation``s. ``tokenizer``: a
    ``ChatTemplate``, ``tokenizers.Tokenizer`` or tokenizer path (a store directory works). ``pack``: several
    samples per row (else one, right-padded). ``all_turns``: loss on every assistant turn (default: the last,
    as InstructRetro). Padding uses ``pad_id`` (default the template's) with loss False. QA records with
    ``context_ids`` instead of ``context`` (the synthetic corpus' ``qa.jsonl``) are resolved through
    ``documents`` ({id: text} or a documents JSONL); ``max_context`` keeps the first passages (evaluation's
    ``max_context``, 5 by default there, so tuning and evaluation prompts agree).

    ``retrieval_neighbors=True`` (keep retrieval on during tuning; not in the paper): no packing; ``seq_len``
    must be a multiple of ``chunk_len`` and each row also has ``neighbors`` / ``neighbor_mask`` [L, k, r]:
    the sample's first ``k`` context passages (:func:`passage_neighbors`), the same for every chunk.

    Items: ``tokens`` int64 [S], ``loss_mask`` bool [S], ``position`` int64 (row index) (+ neighbours).
    Attributes: ``num_conversations``, ``num_truncated``, ``fill`` (fraction of row positions used).
    """

    def __init__(self, source: Any, tokenizer: Any, *, seq_len: int, pack: bool = True, all_turns: bool = False,
                 retrieval_neighbors: bool = False, k: int = 2, r: int | None = None, chunk_len: int = 64,
                 pad_id: int | None = None, documents: Any = None, max_context: int | None = None,
                 progress: bool = False) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
            raise ConfigError(f"seq_len must be an int >= 2, got {seq_len!r}")
        self.template = _as_template(tokenizer)
        self.seq_len = int(seq_len)
        self.pad_id = self.template.pad_id if pad_id is None else int(pad_id)
        self.retrieval_neighbors = bool(retrieval_neighbors)
        self.pack = bool(pack) and not self.retrieval_neighbors
        if self.retrieval_neighbors:
            if chunk_len < 1 or self.seq_len % chunk_len:
                raise ConfigError(f"seq_len {seq_len} is not a multiple of chunk_len {chunk_len}")
            if k < 1:
                raise ConfigError(f"k must be >= 1, got {k}")
        self.chunk_len, self.k = int(chunk_len), int(k)
        self.r = 2 * self.chunk_len if r is None else int(r)
        if self.r < 1:
            raise ConfigError(f"r must be >= 1, got {self.r}")

        from tqdm.auto import tqdm

        docs = load_documents(documents)
        tok_list, mask_list, passages = [], [], []
        self.num_truncated = 0
        for where, rec in tqdm(_records(source), desc="sft encode", unit="conv", disable=not progress):
            conv = _conversation(where, rec, docs, max_context)
            try:
                ids, mask, cut = _encode_fit(self.template, conv, self.seq_len, all_turns)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
            self.num_truncated += int(cut)
            tok_list.append(ids.astype(np.int32))
            mask_list.append(mask)
            if self.retrieval_neighbors:
                passages.append(passage_neighbors(self.template.tokenizer, conv.context, self.k, self.r, self.pad_id))
        if not tok_list:
            raise ConfigError(f"SFTDataset: no conversations in {source!r}")
        self.num_conversations = len(tok_list)
        lengths = np.array([len(t) for t in tok_list], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._tokens = np.concatenate(tok_list)
        self._mask = np.concatenate(mask_list)
        rows = pack_lengths(lengths.tolist(), self.seq_len) if self.pack else [[i] for i in range(len(lengths))]
        self._row_items = np.concatenate([np.asarray(r, np.int64) for r in rows])
        self._row_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        self.fill = float(lengths.sum()) / (len(rows) * self.seq_len)
        if self.retrieval_neighbors:
            self._nb = np.stack([p[0] for p in passages]).astype(np.int32)
            self._nb_mask = np.stack([p[1] for p in passages])

    def __len__(self) -> int:
        return len(self._row_offsets) - 1

    def check_vocab(self, vocab_size: int) -> None:
        """``MismatchError`` if a token id (or the pad id) falls outside a model vocabulary of ``vocab_size``."""
        from pyretro.errors import MismatchError

        top = max(int(self._tokens.max()), self.pad_id, int(self._nb.max()) if self.retrieval_neighbors else 0)
        if top >= vocab_size:
            raise MismatchError(f"SFT data uses token id {top} (tokenizer vocabulary "
                                f"{self.template.tokenizer.get_vocab_size(with_added_tokens=True)}), outside the "
                                f"model's vocab_size {vocab_size}")

    def row_items(self, i: int) -> np.ndarray:
        """Conversation indices (in source order) packed into row ``i``."""
        return self._row_items[self._row_offsets[i]:self._row_offsets[i + 1]]

    def conversation(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, loss mask) of conversation ``j`` after truncation."""
        a, b = self._offsets[j], self._offsets[j + 1]
        return self._tokens[a:b].astype(np.int64), self._mask[a:b]

    def get_batch(self, indices: Sequence[int] | np.ndarray | Iterable[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.int64).reshape(-1)
        n = len(self)
        bad = (idx < 0) | (idx >= n)
        if bad.any():
            raise IndexError(f"row index {int(idx[bad][0])} is out of range [0, {n})")
        B, S = len(idx), self.seq_len
        tokens = np.full((B, S), self.pad_id, dtype=np.int64)
        loss = np.zeros((B, S), dtype=bool)
        for b, i in enumerate(idx):
            pos = 0
            for j in self.row_items(int(i)):
                a, e = self._offsets[j], self._offsets[j + 1]
                tokens[b, pos:pos + e - a] = self._tokens[a:e]
                loss[b, pos:pos + e - a] = self._mask[a:e]
                pos += e - a
        batch = {"tokens": torch.from_numpy(tokens), "loss_mask": torch.from_numpy(loss),
                 "position": torch.from_numpy(idx.copy())}
        if self.retrieval_neighbors:
            L = S // self.chunk_len
            conv = self._row_items[self._row_offsets[idx]]  # one conversation per row
            nb = torch.from_numpy(self._nb[conv].astype(np.int64))[:, None].expand(B, L, self.k, self.r)
            nm = torch.from_numpy(self._nb_mask[conv])[:, None].expand(B, L, self.k, self.r)
            batch["neighbors"], batch["neighbor_mask"] = nb.contiguous(), nm.contiguous()
        return batch

    def __repr__(self) -> str:
        return (f"SFTDataset(rows={len(self)}, conversations={self.num_conversations}, seq_len={self.seq_len}, "
                f"pack={self.pack}, fill={self.fill:.3f}, retrieval_neighbors={self.retrieval_neighbors})")
