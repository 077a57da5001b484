"""DocumentDataset: one document per sample, cropped / padded, against the store's own documents; errors; a
training run on it through the loop (the demo's bursty-pair phase)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _retrieval_fixtures import VOCAB, make_store

from pyretro.errors import ConfigError, MismatchError
from pyretro.train import DocumentDataset


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "s", num_docs=17, seed=3, chunk_len=8, max_len=50, repeat_docs=False)


@pytest.mark.parametrize("seq_len", [7, 24, 64])
def test_rows_are_the_documents_cropped_and_padded(store, seq_len):
    ds = DocumentDataset(store, seq_len=seq_len, pad_id=VOCAB + 1)
    assert len(ds) == store.num_docs == 17
    idx = np.array([16, 0, 5, 5, 3])
    b = ds.get_batch(idx)
    assert b["tokens"].shape == b["loss_mask"].shape == (5, seq_len) and b["tokens"].dtype == torch.int64
    assert b["position"].tolist() == idx.tolist()
    for row, d in enumerate(idx):
        doc = np.asarray(store.document(int(d)))
        n = min(len(doc), seq_len)
        assert b["tokens"][row, :n].tolist() == doc[:n].tolist()
        assert b["loss_mask"][row].tolist() == [True] * n + [False] * (seq_len - n)
        assert (b["tokens"][row, n:] == VOCAB + 1).all()
    item = ds[-1]
    assert item["tokens"].tolist() == b["tokens"][0].tolist()
    lengths = np.diff(np.asarray(store.doc_offsets))
    assert ds.cropped_fraction == pytest.approx(float((lengths > seq_len).mean()))


def test_bad_arguments(store):
    for bad in (1, 0, 2.5, True, "8"):
        with pytest.raises(ConfigError, match="seq_len"):
            DocumentDataset(store, seq_len=bad)
    ds = DocumentDataset(store, seq_len=16)
    with pytest.raises(IndexError, match="out of range"):
        ds.get_batch([0, 17])
    with pytest.raises(MismatchError, match="vocab"):
        ds.check_vocab(VOCAB - 1)
    ds.check_vocab(VOCAB)
    with pytest.raises(MismatchError, match="pad_id"):
        DocumentDataset(store, seq_len=16, pad_id=VOCAB).check_vocab(VOCAB)
    with pytest.raises(TypeError, match="store"):
        DocumentDataset(42, seq_len=16)


def test_trains_through_the_loop(store, tmp_path):
    from pyretro.model import GPT, GPTConfig
    from pyretro.train import DataSection, ModelSection, OptimSection, TrainConfig, TrainSection, train

    torch.manual_seed(0)
    gcfg = GPTConfig(vocab_size=VOCAB + 2, d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
    tc = TrainConfig(model=ModelSection(kind="gpt", gpt=gcfg), data=DataSection(seq_len=40, num_workers=0),
                     optim=OptimSection(lr=3e-3, warmup_steps=1),
                     train=TrainSection(steps=12, batch_size=4, seed=0, device="cpu", distributed="none",
                                        eval_interval=0, log_interval=4, ckpt_interval=0, out_dir=str(tmp_path / "run"),
                                        progress=False, plot=False))
    ds = DocumentDataset(store, seq_len=40, pad_id=0)
    res = train(tc, model=GPT(gcfg), train_data=ds)
    losses = [res.losses[s] for s in sorted(res.losses)]
    assert res.step == 12 and all(np.isfinite(losses)) and losses[-1] < losses[0]
