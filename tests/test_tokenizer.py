"""Tokenizer training, loading, round trips, special tokens and fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from pyretro.data.synthetic import iter_documents
from pyretro.data.tokenizer import (
    SPECIAL_TOKENS,
    fingerprint,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    train_bpe,
    vocab_size,
)

ODD_TEXTS = [
    "Héllo wörld — naïve café",
    "日本語のテキスト and emoji 🙂🚀",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "",
    "a",
    "special <|eod|> inside <|user|> text",
]


@pytest.fixture(scope="module")
def tok():
    return train_bpe((d["text"] for d in iter_documents(150, 3, seed=0)), 700)


def test_special_token_ids_are_fixed(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    ids = special_ids(tok)
    assert ids["pad"] == 0 and ids["eod"] == 1
    assert ids["<|assistant|>"] == 4 and ids["<|context|>"] == 5


def test_vocab_size_and_compression(tok):
    assert 262 < vocab_size(tok) <= 700
    text = next(iter_documents(1, 2, seed=99))["text"]
    assert len(tok.encode(text).ids) < len(text.encode()) / 2.5  # learned merges compress


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_round_trip_is_exact(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_random_unicode_round_trip(tok, rng):
    for _ in range(20):
        cps = rng.integers(1, 0x2FFF, size=int(rng.integers(0, 60)))
        text = "".join(chr(int(c)) for c in cps if not 0xD800 <= c < 0xE000)
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def test_special_strings_in_text_map_to_special_ids(tok):
    ids = tok.encode("x<|eod|>y", add_special_tokens=False).ids
    assert 1 in ids


def test_save_load_fingerprint(tmp_path, tok):
    p = save_tokenizer(tok, tmp_path / "sub" / "tokenizer.json")
    for src in (p, str(p), tmp_path / "sub", tok):
        t2 = load_tokenizer(src)
        assert fingerprint(t2) == fingerprint(tok)
        np.testing.assert_array_equal(t2.encode(ODD_TEXTS[1]).ids, tok.encode(ODD_TEXTS[1]).ids)
    assert fingerprint(tok).startswith("sha256:") and len(fingerprint(tok)) == 7 + 64
    other = train_bpe((d["text"] for d in iter_documents(150, 3, seed=0)), 600)
    assert fingerprint(other) != fingerprint(tok)


def test_training_is_deterministic():
    texts = [d["text"] for d in iter_documents(60, 2, seed=3)]
    assert fingerprint(train_bpe(texts, 400)) == fingerprint(train_bpe(iter(texts), 400))


def test_store_records_the_same_fingerprint(tmp_path, tok):
    from pyretro.store import ChunkStore, ChunkStoreWriter

    with ChunkStoreWriter(tmp_path / "s", 8, tokenizer=tok) as w:
        w.add_document(np.array(tok.encode("hello there").ids))
    assert ChunkStore.open(tmp_path / "s").tokenizer_fingerprint == fingerprint(tok)


def test_foreign_tokenizer_special_ids():
    t = Tokenizer(models.WordLevel({"a": 0, "<|endoftext|>": 1, "<pad>": 2, "[UNK]": 3}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    ids = special_ids(t)
    assert ids["eod"] == 1 and ids["pad"] == 2
    t2 = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    assert special_ids(t2)["eod"] is None


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(bad)
    with pytest.raises(TypeError, match="tokenizer"):
        load_tokenizer(123)
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], 100)
    with pytest.raises(TypeError, match="item 1"):
        train_bpe(["abc", b"bytes"], 300)
    with pytest.raises(ValueError, match="duplicates"):
        train_bpe(["abc"], 300, special_tokens=["<a>", "<a>"])
