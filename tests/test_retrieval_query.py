"""Neighbour tables and the exclusion filter: property test, padding, determinism, resume, mismatches."""

from __future__ import annotations

import numpy as np
import pytest
from _retrieval_fixtures import make_store
from hypothesis import given, settings
from hypothesis import strategies as st

from pyretro.errors import ConfigError, MismatchError, StoreError
from pyretro.retrieval import (
    Exclusion,
    HashingEmbedder,
    NeighborTable,
    Retriever,
    build_index,
    build_neighbor_table,
    embed_store,
    groups_from_sample_length,
    keep_first,
    open_embeddings,
)
from pyretro.retrieval.blocks import BLOCKS

pytest.importorskip("faiss")


def _reference_filter(cand, excluded_sets, k):
    out = np.full((len(cand), k), -1, np.int64)
    for i, row in enumerate(cand):
        kept = [c for c in row if c >= 0 and c not in excluded_sets[i]][:k]
        out[i, : len(kept)] = kept
    return out


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_filter_never_keeps_excluded_docs(data):
    n_db = data.draw(st.integers(1, 40))
    n_q = data.draw(st.integers(1, 12))
    kc = data.draw(st.integers(1, 10))
    k = data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    db_doc = np.sort(rng.integers(0, max(1, n_db // 3), n_db))
    q_doc = rng.integers(0, db_doc.max() + 1, n_q)
    groups = rng.integers(0, 3, n_q) if data.draw(st.booleans()) else None
    cand = rng.integers(-1, n_db, (n_q, kc))
    ex = Exclusion(q_doc, db_doc, groups=groups, db_num_docs=int(db_doc.max()) + 1)
    out = keep_first(cand, ex.excluded(np.arange(n_q), cand), k)
    if groups is None:
        sets = [{j for j in range(n_db) if db_doc[j] == q_doc[i]} for i in range(n_q)]
    else:
        sets = [{j for j in range(n_db) if db_doc[j] in set(q_doc[groups == groups[i]])} for i in range(n_q)]
    np.testing.assert_array_equal(out, _reference_filter(cand, sets, k))
    for i in range(n_q):  # the property itself, stated directly
        assert not any(c in sets[i] for c in out[i] if c >= 0)


def test_filter_from_pairs_and_doc_map():
    db_doc = np.array([0, 0, 1, 2, 2, 3])
    cand = np.array([[0, 2, 3, 5], [5, 4, 1, 0]])
    ex = Exclusion.from_pairs(np.array([0, 0, 1]), np.array([0, 2, 3]), 2, db_doc, 4)
    np.testing.assert_array_equal(keep_first(cand, ex.excluded(np.arange(2), cand), 3), [[2, 5, -1], [4, 1, 0]])
    ex = Exclusion(np.array([0, 1]), db_doc, doc_map=np.array([-1, 2]), db_num_docs=4)
    np.testing.assert_array_equal(keep_first(cand, ex.excluded(np.arange(2), cand), 4), [[0, 2, 3, 5], [5, 1, 0, -1]])
    with pytest.raises(ConfigError):
        Exclusion(np.array([0]), db_doc, mode="sample")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    root = tmp_path_factory.mktemp("db")
    store = make_store(root / "store", num_docs=24, seed=1)
    emb = HashingEmbedder(dim=32)
    embed_store(store, emb, root / "emb", block_size=16, progress=False)
    _, E = open_embeddings(root / "emb", store, emb)
    index, ih = build_index(E, root / "index", header={"store_id": store.store_id, "embedder": emb.fingerprint(),
                                                        "embedder_spec": "hashing:32"}, progress=False)
    return {"root": root, "store": store, "emb": emb, "E": E, "index": index, "ih": ih}


def _table(db, out, **kw):
    kw.setdefault("k", 5)
    kw.setdefault("block_size", 13)
    return build_neighbor_table(out, db["index"], db["E"], db["store"], index_header=db["ih"],
                                embedder_fingerprint=db["emb"].fingerprint(), progress=False, **kw)


def test_table_excludes_own_document_and_finds_duplicates(db, tmp_path):
    store = db["store"]
    t = NeighborTable.open(_table(db, tmp_path / "nb"), store)
    nb = t.neighbors
    assert nb.shape == (len(store), 5) and nb.dtype == np.int64
    valid = nb >= 0
    own = store.chunk_doc[np.arange(len(store))][:, None]
    assert not (valid & (store.chunk_doc[np.where(valid, nb, 0)] == own)).any()
    # a chunk of a repeated document finds its exact copy (cosine 1) first
    for i in range(len(store)):
        same = np.flatnonzero(store.chunk_doc != store.chunk_doc[i])
        copies = [j for j in same if np.array_equal(store.chunk(j), store.chunk(i))]
        if copies and nb[i, 0] >= 0:
            assert nb[i, 0] in copies or np.isclose(db["E"][nb[i, 0]] @ db["E"][i], 1.0, atol=1e-5)
    # same table values through get()
    np.testing.assert_array_equal(t.get([0, 3], k=2), nb[[0, 3], :2])
    with pytest.raises(ConfigError):
        t.get([0], k=6)


def test_sample_groups_exclude_all_docs_of_the_sample(db, tmp_path):
    store = db["store"]
    groups = groups_from_sample_length(len(store), 4)
    nb = NeighborTable.open(_table(db, tmp_path / "nb", groups=groups)).neighbors
    for i in range(len(store)):
        sample_docs = set(store.chunk_doc[groups == groups[i]].tolist())
        assert not {int(store.chunk_doc[j]) for j in nb[i] if j >= 0} & sample_docs


def test_padding_when_too_few_survive(tmp_path):
    store = make_store(tmp_path / "s", num_docs=2, seed=3, max_len=20, repeat_docs=False)
    emb = HashingEmbedder(dim=16)
    embed_store(store, emb, tmp_path / "e", progress=False)
    _, E = open_embeddings(tmp_path / "e")
    index, ih = build_index(E, None, progress=False)
    nb = NeighborTable(build_neighbor_table(tmp_path / "nb", index, E, store, k=20, progress=False)).neighbors
    for i in range(len(store)):
        other = np.flatnonzero(store.chunk_doc != store.chunk_doc[i])
        assert sorted(nb[i][nb[i] >= 0].tolist()) == sorted(other.tolist())  # all of the other doc, rest -1
        assert (nb[i, len(other):] == -1).all()


def test_single_chunk_corpus(tmp_path):
    store = make_store(tmp_path / "s", num_docs=1, seed=0, max_len=5, repeat_docs=False)
    assert len(store) == 1
    emb = HashingEmbedder(dim=8)
    embed_store(store, emb, tmp_path / "e", progress=False)
    _, E = open_embeddings(tmp_path / "e")
    index, _ = build_index(E, None, progress=False)
    nb = NeighborTable(build_neighbor_table(tmp_path / "nb", index, E, store, k=2, progress=False)).neighbors
    np.testing.assert_array_equal(nb, [[-1, -1]])


def test_deterministic_and_resumes_after_kill(db, tmp_path, monkeypatch):
    ref = NeighborTable(_table(db, tmp_path / "a")).neighbors.copy()
    np.testing.assert_array_equal(NeighborTable(_table(db, tmp_path / "b")).neighbors, ref)

    import pyretro.retrieval.query as q

    real, calls = q.search_filtered, {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed in the middle of block 3
        return real(*a, **kw)

    monkeypatch.setattr(q, "search_filtered", dying)
    with pytest.raises(KeyboardInterrupt):
        _table(db, tmp_path / "c")
    assert len(list((tmp_path / "c" / BLOCKS).iterdir())) == 2
    with pytest.raises(StoreError, match="incomplete"):
        NeighborTable(tmp_path / "c")
    monkeypatch.setattr(q, "search_filtered", real)
    np.testing.assert_array_equal(NeighborTable(_table(db, tmp_path / "c")).neighbors, ref)
    # other settings do not silently resume
    with pytest.raises(MismatchError, match="k_search"):
        _table(db, tmp_path / "c", k_search=50)


def test_mismatches(db, tmp_path):
    store, other = db["store"], make_store(tmp_path / "other", num_docs=5, seed=9)
    path = _table(db, tmp_path / "nb")
    with pytest.raises(MismatchError, match="store"):
        NeighborTable.open(path, other)
    with pytest.raises(MismatchError, match="store"):
        open_embeddings(db["root"] / "emb", other)
    with pytest.raises(MismatchError, match="dim"):
        open_embeddings(db["root"] / "emb", store, HashingEmbedder(dim=64))
    with pytest.raises(MismatchError, match="dim"):
        Retriever(store, db["index"], HashingEmbedder(dim=64))
    with pytest.raises(MismatchError):  # index of another store
        build_neighbor_table(tmp_path / "x", db["index"], db["E"][:len(other)], other, progress=False)
    with pytest.raises(ConfigError, match="doc_map"):
        build_neighbor_table(tmp_path / "x", db["index"], np.zeros((len(other), 32), np.float32), other,
                             db_store=store, progress=False)


def test_cross_store_query(db, tmp_path):
    store = db["store"]
    qs = make_store(tmp_path / "q", num_docs=6, seed=1)  # same generator seed: shares documents with db
    embed_store(qs, db["emb"], tmp_path / "qe", progress=False)
    _, QE = open_embeddings(tmp_path / "qe", qs)
    doc_map = np.arange(qs.num_docs)  # query doc d is database doc d (same seed, same first docs)
    t1 = NeighborTable(build_neighbor_table(tmp_path / "t1", db["index"], QE, qs, store, k=3, doc_map=doc_map,
                                            progress=False), qs, store).neighbors
    valid = t1 >= 0
    assert not (valid & (store.chunk_doc[np.where(valid, t1, 0)] == qs.chunk_doc[:, None])).any()
    t2 = NeighborTable(build_neighbor_table(tmp_path / "t2", db["index"], QE, qs, store, k=3, exclude="none",
                                            progress=False)).neighbors
    assert (t2[:, 0] >= 0).all()  # without exclusion every chunk finds its own copy
    assert np.allclose(np.einsum("ij,ij->i", QE, db["E"][t2[:, 0]]), 1.0, atol=1e-5)


def test_retriever_online(db):
    store = db["store"]
    r = Retriever.open(store.path, db["root"] / "index")
    chunks = [store.chunk(i) for i in range(5)]
    ids = r.query_chunks(chunks, k=3, exclude_docs=store.chunk_doc[:5])
    table = NeighborTable(_table(db, db["root"] / "nb_online", k=3)).neighbors
    np.testing.assert_array_equal(ids, table[:5])  # same exclusion -> same answer as the offline table
    texts = [store.text(i) for i in range(5)]
    np.testing.assert_array_equal(r.query_chunks(texts, k=3, exclude_docs=[[d] for d in store.chunk_doc[:5]]), ids)
    ids2, tokens, mask = r.neighbors(chunks[:2], k=2)
    assert tokens.shape == (2, 2, 2 * store.chunk_len) and mask.shape == tokens.shape
    assert ids2[0, 0] == 0 or np.isclose(db["E"][ids2[0, 0]] @ db["E"][0], 1.0, atol=1e-5)  # itself, no exclusion
    np.testing.assert_array_equal(np.asarray(tokens)[0, 0][: len(store.chunk(ids2[0, 0]))], store.chunk(ids2[0, 0]))
    with pytest.raises(TypeError):
        r.query_chunks("one string")


def test_widens_search_when_own_document_fills_the_candidates(tmp_path):
    from _retrieval_fixtures import word_tokenizer

    from pyretro.store import ChunkStoreWriter

    rng = np.random.default_rng(0)
    rep = rng.integers(1, 300, 8)
    with ChunkStoreWriter(tmp_path / "s", chunk_len=8, tokenizer=word_tokenizer()) as w:
        w.add_document(np.tile(rep, 60))  # 60 identical chunks: every top-32 candidate is in the own doc
        for _ in range(5):
            w.add_document(rng.integers(1, 300, 16))
    from pyretro.store import ChunkStore

    store = ChunkStore.open(tmp_path / "s")
    emb = HashingEmbedder(dim=16)
    embed_store(store, emb, tmp_path / "e", progress=False)
    _, E = open_embeddings(tmp_path / "e")
    index, _ = build_index(E, None, progress=False)
    nb = NeighborTable(build_neighbor_table(tmp_path / "nb", index, E, store, k=3, k_search=32,
                                            progress=False)).neighbors
    assert (nb[:60] >= 60).all()  # found chunks of other documents, no -1 padding
    _, exact = index.search(np.ascontiguousarray(E[:1]), len(store))
    expected = [j for j in exact[0] if store.chunk_doc[j] != 0][:3]
    np.testing.assert_array_equal(nb[0], expected)
