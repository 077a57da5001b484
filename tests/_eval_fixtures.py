"""Tiny models and a tiny BPE for the evaluation tests (random weights; scores need not be high)."""

from __future__ import annotations

import torch

from pyretro.data.synthetic import generate as synthetic
from pyretro.data.tokenizer import train_bpe, vocab_size
from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel

CHUNK = 8


def corpus():
    return synthetic(num_entities=6, docs_per_entity=3, seed=5)


def tokenizer(c=None):
    c = c or corpus()
    return train_bpe([d["text"] for d in c.documents], vocab_size=400)


def tiny_models(vocab: int, seed: int = 0, max_seq_len: int = 512, lm_head_bias: bool = False):
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=vocab, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, rotary_fraction=0.5,
                        max_seq_len=max_seq_len, lm_head_bias=lm_head_bias)).eval()
    retro = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=CHUNK, num_neighbors=2, cca_layers=(2, 4),
                                                 encoder_d_model=16, encoder_heads=2)).eval()
    for c in retro.cca:  # a retro-fitted model starts equal to its GPT; make retrieval matter
        torch.nn.init.normal_(c.o.weight, 0.0, 0.5)
    return gpt, retro


def tiny_models_for(tok, **kw):
    return tiny_models(vocab_size(tok), **kw)


def store_and_index(tok, c, out) -> dict:
    """A chunk store of ``c``'s database documents (tokenized with ``tok``) and its hashing:64 Flat index under
    ``out``: the paths ``build_database`` returns (store, index, ...)."""
    from pyretro.retrieval.pipeline import build_database, resolve
    from pyretro.store import ChunkStoreWriter

    with ChunkStoreWriter(out / "store", chunk_len=CHUNK, tokenizer=tok) as w:
        for d in c.database_documents:
            w.add_document(tok.encode(d["text"], add_special_tokens=False).ids)
    return build_database(resolve({
        "build": {"out": str(out / "db"), "progress": False}, "store": {"path": str(out / "store")},
        "embed": {"embedder": "hashing:64", "device": "cpu"}, "index": {"factory": "Flat", "recall_sample": 0},
        "query": {"k": 2, "chunks_per_sample": 4}}))
