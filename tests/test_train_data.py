"""Pretraining data: RetroDataset samples/neighbours vs numpy and per-id gathers, exclusion, errors, blends,
the resumable rank-splitting sampler and the DataLoader (workers, pickling)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyretro.errors import ConfigError, MismatchError
from pyretro.retrieval import (
    HashingEmbedder,
    NeighborTable,
    build_index,
    build_neighbor_table,
    embed_store,
    groups_from_sample_length,
    open_embeddings,
)
from pyretro.store import ChunkStore, ChunkStoreWriter
from pyretro.train import (
    BlendedDataset,
    ResumableSampler,
    RetroDataset,
    blend_schedule,
    make_loader,
)

M = 8  # chunk_len
VOCAB = 400
SEQ = 4 * M  # L = 4 chunks per sample


def _write_store(path, seed: int, num_docs: int, max_len: int = 70, vocab: int = VOCAB) -> ChunkStore:
    """Random documents of 0..max_len tokens (ids >= 1, so pad 0 is recognizable); every 3rd repeats an
    earlier one so the hashing embedder finds real neighbours in other documents."""
    rng = np.random.default_rng(seed)
    docs: list[np.ndarray] = []
    for d in range(num_docs):
        if d % 3 == 2:
            docs.append(docs[int(rng.integers(len(docs)))].copy())
        else:
            docs.append(rng.integers(1, vocab, size=int(rng.integers(0, max_len))))
    with ChunkStoreWriter(path, chunk_len=M, vocab_size=vocab, fsync=False) as w:
        for doc in docs:
            w.add_document(doc)
    return ChunkStore.open(path)


def _table(root, name, store, db=None, k=4, **kw):
    db = store if db is None else db
    emb = HashingEmbedder(dim=32)
    embed_store(db, emb, root / f"{name}-dbemb", progress=False)
    _, E = open_embeddings(root / f"{name}-dbemb", db, emb)
    index, ih = build_index(E, None, header={"store_id": db.store_id}, progress=False)
    if db is store:
        Q = E
    else:
        embed_store(store, emb, root / f"{name}-qemb", progress=False)
        _, Q = open_embeddings(root / f"{name}-qemb", store, emb)
    return NeighborTable.open(build_neighbor_table(root / name, index, Q, store, db, k=k, index_header=ih,
                                                   progress=False, **kw), store, db)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    store = _write_store(root / "store", seed=0, num_docs=90)
    groups = groups_from_sample_length(len(store), SEQ // M)
    table = _table(root, "nb", store, groups=groups)
    return {"root": root, "store": store, "table": table}


def _expected_tokens(store: ChunkStore, sample: int, L: int, pad: int = 0):
    toks = np.full((L, M), pad, np.int64)
    mask = np.zeros((L, M), bool)
    for u in range(L):
        c = store.chunk(sample * L + u)
        toks[u, :len(c)] = c
        mask[u, :len(c)] = True
    return toks.reshape(-1), mask.reshape(-1)


def test_samples_match_numpy_and_neighbors_match_per_id_gather(env):
    store, table = env["store"], env["table"]
    ds = RetroDataset(store, table, seq_len=SEQ, k=2)
    L = SEQ // M
    assert len(ds) == len(store) // L and ds.r == 2 * M
    idx = [0, 5, len(ds) - 1, 3]
    batch = ds.get_batch(idx)
    assert batch["tokens"].shape == (4, SEQ) and batch["tokens"].dtype == torch.int64
    assert batch["loss_mask"].dtype == torch.bool
    assert batch["neighbors"].shape == (4, L, 2, 2 * M) and batch["neighbor_mask"].dtype == torch.bool
    assert batch["position"].tolist() == idx
    padded = 0
    for b, s in enumerate(idx):
        toks, mask = _expected_tokens(store, s, L)
        np.testing.assert_array_equal(batch["tokens"][b].numpy(), toks)
        np.testing.assert_array_equal(batch["loss_mask"][b].numpy(), mask)
        padded += int((~mask).sum())
        for u in range(L):
            for j in range(2):
                nid = int(table.neighbors[s * L + u, j])
                t1, m1 = store.gather(np.array([nid]))
                np.testing.assert_array_equal(batch["neighbors"][b, u, j].numpy(), t1[0])
                np.testing.assert_array_equal(batch["neighbor_mask"][b, u, j].numpy(), m1[0])
                if nid < 0:
                    assert not batch["neighbor_mask"][b, u, j].any()
    assert padded > 0  # short chunks really were padded and masked
    every = ds.get_batch(range(len(ds)))
    assert ds.pad_fraction == pytest.approx(1 - every["loss_mask"].float().mean().item())
    # all samples in order, padding removed, are exactly the store's token stream (up to the last used chunk)
    real = every["tokens"][every["loss_mask"]].numpy()
    np.testing.assert_array_equal(real, store.tokens[:store.chunk_span(len(ds) * L - 1)[1]])
    item = ds[5]  # __getitem__ == row of get_batch
    for key in batch:
        torch.testing.assert_close(item[key], batch[key][1])
    assert ds[-1]["position"].item() == len(ds) - 1


def test_gpt_samples_have_the_same_tokens(env):
    retro = RetroDataset(env["store"], env["table"], seq_len=SEQ)
    gpt = RetroDataset(env["store"], seq_len=SEQ)
    assert len(gpt) == len(retro) and not gpt.has_neighbors
    a, b = gpt.get_batch(range(len(gpt))), retro.get_batch(range(len(gpt)))
    assert set(a) == {"tokens", "loss_mask", "position"}
    torch.testing.assert_close(a["tokens"], b["tokens"])
    torch.testing.assert_close(a["loss_mask"], b["loss_mask"])


def test_no_neighbour_from_the_samples_own_documents(env):
    store, table = env["store"], env["table"]
    ds = RetroDataset(store, table, seq_len=SEQ, k=4)
    np.testing.assert_array_equal(ds.groups(), groups_from_sample_length(len(store), SEQ // M))
    L = ds.chunks_per_sample
    found = 0
    for s in range(len(ds)):
        ids = np.arange(s * L, (s + 1) * L)
        own = set(store.chunk_doc[ids].tolist())
        nb = table.neighbors[ids, :4]
        docs = set(store.chunk_doc[nb[nb >= 0]].tolist())
        found += int((nb >= 0).sum())
        assert not docs & own
    assert found > 0


def test_exclusion_warnings(env):
    store, table = env["store"], env["table"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RetroDataset(store, table, seq_len=SEQ)  # matching groups: silent
    with pytest.warns(UserWarning, match="chunks-per-sample 8"):
        RetroDataset(store, table, seq_len=2 * SEQ)
    with pytest.raises(MismatchError, match="sample groups"):
        RetroDataset(store, table, seq_len=2 * SEQ, strict_exclusion=True)
    doc_only = _table(env["root"], "nb-doc", store, k=2)
    with pytest.warns(UserWarning, match="own document"):
        RetroDataset(store, doc_only, seq_len=SEQ)


def test_cross_store_table_and_mismatches(env, tmp_path):
    db, root = env["store"], env["root"]
    ev = _write_store(tmp_path / "eval", seed=7, num_docs=20)
    t = _table(root, "nb-cross", ev, db, k=3, exclude="none")
    ds = RetroDataset(ev, t.path, seq_len=SEQ, db_store=db.path, k=3)
    assert ds.db_store.store_id == db.store_id
    batch = ds.get_batch([1])
    ids = t.neighbors[np.arange(4, 8), :3]
    exp, exp_m = db.gather(ids)
    np.testing.assert_array_equal(batch["neighbors"][0].numpy(), exp)
    np.testing.assert_array_equal(batch["neighbor_mask"][0].numpy(), exp_m)
    with pytest.raises(MismatchError, match="db_store"):
        RetroDataset(ev, t, seq_len=SEQ)  # the table points into another store
    with pytest.raises(MismatchError, match="database store"):
        RetroDataset(ev, t, seq_len=SEQ, db_store=ev)
    with pytest.raises(MismatchError, match="query store"):
        RetroDataset(db, t, seq_len=SEQ, db_store=db)
    with pytest.raises(ConfigError, match=r"k must be in \[1, 3\]"):
        RetroDataset(ev, t, seq_len=SEQ, db_store=db, k=4)
    other_vocab = _write_store(tmp_path / "v", seed=7, num_docs=20, vocab=VOCAB + 50)
    t2 = _table(tmp_path, "nb-v", ev, other_vocab, k=2, exclude="none")
    with pytest.raises(MismatchError, match="different tokenizers"):
        RetroDataset(ev, t2, seq_len=SEQ, db_store=other_vocab)


def test_bad_input_errors(env, tmp_path):
    store = env["store"]
    with pytest.raises(ConfigError, match=r"seq_len 30 .* chunk_len 8"):
        RetroDataset(store, seq_len=30)
    with pytest.raises(ConfigError, match="seq_len"):
        RetroDataset(store, seq_len=0)
    tiny = _write_store(tmp_path / "tiny", seed=1, num_docs=2, max_len=10)
    with pytest.raises(ConfigError, match="fewer than one sample"):
        RetroDataset(tiny, seq_len=64 * M)
    with ChunkStoreWriter(tmp_path / "empty", chunk_len=M, vocab_size=VOCAB) as w:
        w.add_document(np.zeros(0, np.int64))
    with pytest.raises(ConfigError, match="0 chunks"):
        RetroDataset(tmp_path / "empty", seq_len=SEQ)
    ds = RetroDataset(store, env["table"], seq_len=SEQ)
    ds.check_vocab(VOCAB)
    with pytest.raises(MismatchError, match=f"vocab_size {VOCAB}.*model's vocab_size 100"):
        ds.check_vocab(100)
    with pytest.raises(MismatchError, match="vocab_size"):
        RetroDataset(store, seq_len=SEQ, vocab_size=VOCAB - 1)
    with pytest.raises(IndexError, match="out of range"):
        ds.get_batch([len(ds)])
    with pytest.raises(ConfigError, match="without a neighbour table"):
        RetroDataset(store, seq_len=SEQ, db_store=store)


# --- sampler ---------------------------------------------------------------------------------------------
def _all(sampler):
    return [list(b) for b in sampler]


def test_sampler_is_deterministic_and_covers_each_epoch():
    a = _all(ResumableSampler(103, 10, seed=3, epoch=1))
    assert a == _all(ResumableSampler(103, 10, seed=3, epoch=1))
    assert a != _all(ResumableSampler(103, 10, seed=3, epoch=2))
    assert a != _all(ResumableSampler(103, 10, seed=4, epoch=1))
    flat = [i for b in a for i in b]
    assert len(a) == 10 and all(len(b) == 10 for b in a) and len(set(flat)) == 100  # drop_last: 3 left out
    full = _all(ResumableSampler(103, 10, seed=3, epoch=1, drop_last=False))
    assert sorted(i for b in full for i in b) == list(range(103)) and len(full[-1]) == 3
    assert _all(ResumableSampler(12, 5, shuffle=False)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_resumes_exactly(world):
    b = 4
    full = [_all(ResumableSampler(100, b, seed=1, epoch=0, rank=r, world_size=world)) for r in range(world)]
    for stop in (0, 1, 3):  # killed after `stop` steps: restart from stop * global batch samples
        res = [_all(ResumableSampler(100, b, seed=1, epoch=0, start=stop * b * world, rank=r, world_size=world))
               for r in range(world)]
        assert res == [f[stop:] for f in full]
    s = ResumableSampler(100, b, seed=1, world_size=world)
    assert len(s) == len(full[0])
    ep, start = s.locate(3 * s.epoch_samples + 2 * b * world)
    assert (ep, start) == (3, 2 * b * world)


def test_rank_split_union_is_the_single_process_batch():
    b, world = 3, 4
    single = _all(ResumableSampler(77, b * world, seed=9, epoch=2, start=5))
    ranks = [_all(ResumableSampler(77, b, seed=9, epoch=2, start=5, rank=r, world_size=world)) for r in range(world)]
    assert all(len(x) == len(single) for x in ranks)
    for step, g in enumerate(single):
        parts = [ranks[r][step] for r in range(world)]
        assert sum(parts, []) == g  # rank r holds slice r of the global batch, in order
    # drop_last=False: the last partial global batch is split, every sample seen once
    tail = [_all(ResumableSampler(77, b, seed=9, rank=r, world_size=world, drop_last=False)) for r in range(world)]
    assert sorted(i for t in tail for bt in t for i in bt) == list(range(77))
    assert [len(t) for t in tail] == [len(ResumableSampler(77, b, seed=9, rank=r, world_size=world, drop_last=False))
                                      for r in range(world)]


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 60), b=st.integers(1, 5), world=st.integers(1, 4), drop_last=st.booleans(),
       seed=st.integers(0, 3), data=st.data())
def test_sampler_rank_split_property(n, b, world, drop_last, seed, data):
    G = b * world
    if drop_last and n < G:
        return
    single = ResumableSampler(n, G, seed=seed, drop_last=drop_last)
    start = data.draw(st.integers(0, single.epoch_samples))
    single.set_epoch(0, start)
    ranks = [ResumableSampler(n, b, seed=seed, start=start, rank=r, world_size=world, drop_last=drop_last)
             for r in range(world)]
    got = [_all(s) for s in ranks]
    assert [len(g) for g in got] == [len(s) for s in ranks]
    want = _all(single)
    flat = [i for g in got for bt in g for i in bt]
    assert sorted(flat) == sorted(i for bt in want for i in bt)  # same samples, each once
    for step, gb in enumerate(want):
        parts = [g[step] for g in got if step < len(g)]
        assert sum(parts, []) == gb  # rank order = slice order of the global batch
    order = single.order(0)
    assert [i for bt in want for i in bt] == order[start:single.epoch_samples][:len(flat)].tolist()


def test_sampler_infinite_and_errors():
    it = iter(ResumableSampler(10, 4, seed=0, epoch=0, start=4, infinite=True))
    got = [next(it) for _ in range(4)]
    s0, s1 = ResumableSampler(10, 4, seed=0, epoch=0), ResumableSampler(10, 4, seed=0, epoch=1)
    assert got == _all(s0)[1:] + _all(s1) + _all(ResumableSampler(10, 4, seed=0, epoch=2))[:1]
    with pytest.raises(TypeError):
        len(ResumableSampler(10, 4, infinite=True))
    with pytest.raises(ConfigError, match="start"):
        ResumableSampler(10, 4, start=9)
    with pytest.raises(ConfigError, match="rank"):
        ResumableSampler(10, 4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        ResumableSampler(10, 4, world_size=3)
    with pytest.raises(ConfigError, match="empty"):
        ResumableSampler(0, 4)


# --- blends ----------------------------------------------------------------------------------------------
def test_blend_schedule_tracks_the_weights(rng):
    for _ in range(60):
        D = int(rng.integers(1, 7))
        w = rng.random(D) ** 3 + (0.0 if rng.random() < 0.8 else 1.0)
        if D > 1 and rng.random() < 0.2:
            w[0] = 0.0
        size = int(rng.integers(1, 1500))
        which, counter = blend_schedule(w, size)
        p = w / w.sum()
        onehot = np.zeros((size, D))
        onehot[np.arange(size), which] = 1
        counts = onehot.cumsum(0)
        assert np.abs(counts - p * np.arange(1, size + 1)[:, None]).max() < 1.0 + 1e-6
        for d in range(D):  # counter = running count of each dataset
            np.testing.assert_array_equal(counter[which == d], np.arange(int((which == d).sum())))
    np.testing.assert_array_equal(blend_schedule([1, 1], 6)[0], [0, 1, 0, 1, 0, 1])
    with pytest.raises(ConfigError, match="weights"):
        blend_schedule([0.0, 0.0], 5)
    with pytest.raises(ConfigError, match="weights"):
        blend_schedule([1.0, -1.0], 5)


def test_blended_dataset(env, tmp_path):
    a = RetroDataset(env["store"], env["table"], seq_len=SEQ)
    other = _write_store(tmp_path / "b", seed=3, num_docs=12)
    b = RetroDataset(other, _table(tmp_path, "nb-b", other, groups=groups_from_sample_length(len(other), 4)),
                     seq_len=SEQ)
    size = 3 * (len(a) + len(b))
    blend = BlendedDataset([a, b], [0.25, 0.75], size=size, seed=5)
    assert len(blend) == size
    which, inner = blend.source(np.arange(size))
    assert abs(int((which == 1).sum()) - 0.75 * size) < 1
    for d, ds in enumerate((a, b)):  # each pass over a dataset sees every sample once
        seq = inner[which == d]
        n = len(ds)
        for p in range(len(seq) // n):
            assert sorted(seq[p * n:(p + 1) * n].tolist()) == list(range(n))
    idx = np.array([0, 7, 3, size - 1, 11])
    batch = blend.get_batch(idx)
    w, i = blend.source(idx)
    for r in range(len(idx)):
        ref = (a, b)[w[r]][int(i[r])]
        for key in ("tokens", "loss_mask", "neighbors", "neighbor_mask"):
            torch.testing.assert_close(batch[key][r], ref[key])
    assert batch["position"].tolist() == idx.tolist()
    again = BlendedDataset([a, b], [0.25, 0.75], size=size, seed=5)
    np.testing.assert_array_equal(again.source(idx)[1], i)
    assert not np.array_equal(BlendedDataset([a, b], [0.25, 0.75], size=size, seed=6).source(np.arange(size))[1],
                              inner)
    with pytest.raises(MismatchError, match="must agree"):
        BlendedDataset([a, RetroDataset(env["store"], seq_len=SEQ)], [1, 1])
    with pytest.raises(ConfigError, match="weights"):
        BlendedDataset([a], [1, 2])


# --- loader ----------------------------------------------------------------------------------------------
def _batches(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def _assert_same(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(x[k], y[k])


def test_loader_in_process_and_with_workers(env):
    ds = RetroDataset(env["store"], env["table"], seq_len=SEQ)
    loader = make_loader(ds, 3, seed=2, epoch=1)
    assert isinstance(loader.sampler, ResumableSampler)
    got = _batches(loader)
    order = _all(ResumableSampler(len(ds), 3, seed=2, epoch=1))
    assert len(got) == len(order)
    for b, idx in zip(got, order, strict=True):
        assert b["position"].tolist() == idx
        torch.testing.assert_close(b["neighbors"], ds.get_batch(idx)["neighbors"])
    workers = _batches(make_loader(ds, 3, seed=2, epoch=1, num_workers=2, prefetch_factor=2))
    _assert_same(workers, got)
    resumed = _batches(make_loader(ds, 3, seed=2, epoch=1, start=6))
    _assert_same(resumed, got[2:])
    ranks = [_batches(make_loader(ds, 1, seed=2, epoch=1, rank=r, world_size=3)) for r in range(3)]
    for step, g in enumerate(got):
        assert torch.cat([ranks[r][step]["tokens"] for r in range(3)]).equal(g["tokens"])


def test_dataset_pickles_by_path(env):
    ds = RetroDataset(env["store"], env["table"], seq_len=SEQ)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # stores and the table reopen by path: no array is copied
    back = pickle.loads(blob)
    _assert_same([back.get_batch([0, 4])], [ds.get_batch([0, 4])])


@pytest.mark.slow  # a spawned worker re-imports torch (~5 s); the pickling test above covers the logic
def test_spawned_worker(env):
    ds = RetroDataset(env["store"], env["table"], seq_len=SEQ)
    ref = _batches(make_loader(ds, 4, seed=0))
    got = _batches(make_loader(ds, 4, seed=0, num_workers=1, multiprocessing_context="spawn"))
    _assert_same(got, ref)


@pytest.mark.slow  # builds a model and a store: a few CPU seconds
def test_benchmark_module_runs_tiny():
    from pyretro.benchmarks.train_data import run

    rows = run(quick=True, tokens=40_000, vocab=512, chunk_len=16, seq=64, small_seq=32, batch=2, small_batch=2,
               batches=2, workers=0, d_model=32, layers=6, heads=1, reps=1)
    assert len(rows) == 4
    for r in rows:
        assert r["time_ms"] > 0 and r["model_ms"] > 0 and r["headroom"] == pytest.approx(r["model_ms"] / r["time_ms"])
    with pytest.raises(ValueError, match="unknown benchmark parameter"):
        run(quick=True, nope=1)


def test_pad_id_from_the_store_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, 50)}, "[PAD]": 50}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    with ChunkStoreWriter(tmp_path / "s", chunk_len=M, tokenizer=tok, fsync=False) as w:
        w.add_document(np.arange(1, 12))  # 2 chunks: 8 + 3 tokens
        w.add_document(np.arange(20, 30))
    ds = RetroDataset(tmp_path / "s", seq_len=2 * M)
    assert ds.pad_id == 50
    item = ds[0]
    assert item["tokens"][11:].tolist() == [50] * 5 and not item["loss_mask"][11:].any()
    assert RetroDataset(tmp_path / "s", seq_len=2 * M, pad_id=0)[0]["tokens"][11:].tolist() == [0] * 5
