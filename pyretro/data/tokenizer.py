"""Tokenizers for pyretro: load a user's ``tokenizer.json`` or train a byte-level BPE on the corpus.

A tokenizer trained here reserves these special tokens, with these ids, before any learned token:

====  =================  ===========================================================
id    token              use
====  =================  ===========================================================
0     ``<|pad|>``        padding (gather's padding id, loss-masked positions)
1     ``<|eod|>``        end of document (appended to each document at ingest)
2     ``<|system|>``     chat role markers (InstructRetro instruction tuning)
3     ``<|user|>``
4     ``<|assistant|>``
5     ``<|context|>``    start of retrieved context in a prompt
====  =================  ===========================================================

ids 6..261 are the 256 byte tokens, then the merges. Byte-level BPE with no normalizer, so
``decode(encode(text)) == text`` for every string (special-token strings in the text are matched as specials).
A user-given tokenizer keeps its own ids; :func:`special_ids` finds pad/eod by their usual names.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "EOD",
    "PAD",
    "SPECIAL_TOKENS",
    "fingerprint",
    "load_tokenizer",
    "save_tokenizer",
    "special_ids",
    "train_bpe",
    "vocab_size",
]

PAD = "<|pad|>"
EOD = "<|eod|>"
SPECIAL_TOKENS = (PAD, EOD, "<|system|>", "<|user|>", "<|assistant|>", "<|context|>")

# Names other tokenizers use for the same roles (first found wins).
_EOD_ALIASES = (EOD, "<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
_PAD_ALIASES = (PAD, "<pad>", "[PAD]", "<|padding|>")


def train_bpe(
    texts: Iterable[str],
    vocab_size: int = 8192,
    *,
    min_frequency: int = 2,
    special_tokens: Iterable[str] = SPECIAL_TOKENS,
    show_progress: bool = False,
) -> Tokenizer:
    """Trains a byte-level BPE on ``texts`` (any iterable, consumed once, streamed).

    ``vocab_size`` counts the special tokens and the 256 byte tokens, so it must exceed both together.
    """
    special = list(special_tokens)
    if len(set(special)) != len(special):
        raise ValueError(f"special_tokens: duplicates in {special}")
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(special) + 1:
        raise ValueError(
            f"vocab_size must be an int > 256 byte tokens + {len(special)} special tokens, got {vocab_size!r}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(_checked(texts), trainer=trainer)
    return tok


def _checked(texts: Iterable[str]) -> Iterator[str]:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts: item {i} is {type(t).__name__}, expected str")
        yield t


def load_tokenizer(tokenizer: Tokenizer | str | os.PathLike) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from itself, a ``tokenizer.json`` path, or a directory holding one
    (a chunk store directory works too: the store keeps its tokenizer as ``tokenizer.json``)."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise TypeError(f"tokenizer: expected a tokenizers.Tokenizer or a path, got {type(tokenizer).__name__}")
    p = Path(tokenizer)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer: no such file: {p}")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as e:  # the Rust error says what is wrong; name the file
        raise ValueError(f"tokenizer: {p} is not a valid tokenizers JSON file: {e}") from None


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> Path:
    """Writes ``tokenizer.json`` atomically (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(tok.to_str(), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def fingerprint(tok: Tokenizer) -> str:
    """``"sha256:<hex>"`` of the tokenizer's JSON serialization (``to_str()``): equal for equal tokenizers and
    across save/load round trips; the same value a chunk store records as ``tokenizer_fingerprint``."""
    return "sha256:" + hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


def vocab_size(tok: Tokenizer) -> int:
    """Number of ids the tokenizer can produce (learned + added/special tokens): max id + 1."""
    return max(tok.get_vocab_size(with_added_tokens=True), max(tok.get_vocab(with_added_tokens=True).values()) + 1)


def special_ids(tok: Tokenizer) -> dict[str, int | None]:
    """Ids of the roles ``pad``, ``eod`` (by their usual names, None if absent) and of each of pyretro's
    chat tokens present in the vocabulary, keyed by token string."""
    vocab = tok.get_vocab(with_added_tokens=True)
    out: dict[str, int | None] = {
        "pad": next((vocab[t] for t in _PAD_ALIASES if t in vocab), None),
        "eod": next((vocab[t] for t in _EOD_ALIASES if t in vocab), None),
    }
    for t in SPECIAL_TOKENS[2:]:
        if t in vocab:
            out[t] = vocab[t]
    return out
