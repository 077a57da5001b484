"""faiss index: auto policy, tiny corpora, save/load, shard merge, search params, recall."""

from __future__ import annotations

import numpy as np
import pytest

from pyretro.errors import ConfigError, StoreError
from pyretro.retrieval import auto_factory, build_index, exact_search, load_index, merge_shards, recall
from pyretro.retrieval.index import add_embeddings, parse_bytes, set_search_params, train_index

faiss = pytest.importorskip("faiss")


def _clustered(rng, n, dim, centers=64):
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_policy():
    assert auto_factory(3, 384)["factory"] == "Flat"
    a = auto_factory(1_000_000, 128)
    assert a["factory"] == "IVF4096,Flat" and a["nprobe"] >= 8 and a["train_size"] >= 39 * 4096
    assert auto_factory(1_000_000, 128, memory_budget="200M")["factory"] == "IVF4096,SQ8"
    assert auto_factory(1_000_000, 128, memory_budget="100M")["factory"] == "IVF4096,PQ64np"
    assert auto_factory(1_000_000, 128, memory_budget="40M")["factory"] == "IVF4096,PQ16np"  # shrunk to fit
    big = auto_factory(50_000_000, 1024, memory_budget="64G")
    assert big["factory"].startswith("OPQ64_256,IVF") and "HNSW32,PQ64" in big["factory"]
    for n in (50_001, 60_000, 100_000, 3_000_000):  # never more lists than 39 training points each allow
        cfg = auto_factory(n, 64)
        assert cfg["nlist"] * 39 <= n and cfg["train_size"] <= n
    with pytest.raises(ConfigError, match="too small"):
        auto_factory(1_000_000, 128, memory_budget="1M")
    assert parse_bytes("1.5G") == int(1.5 * 2**30) and parse_bytes(10) == 10
    with pytest.raises(ConfigError):
        parse_bytes("lots")


@pytest.mark.parametrize("n", [1, 2, 5])
def test_tiny_corpus(rng, n):
    x = _clustered(rng, n, 16)
    index, h = build_index(x, None, progress=False)
    _, ids = index.search(x, 3)
    assert (ids[:, 0] == np.arange(n)).all() and ((ids[:, n:] == -1).all() if n < 3 else True)
    assert h["factory"] == "Flat" and h["ntotal"] == index.ntotal == n


def test_bad_factory_and_too_many_lists(rng):
    x = _clustered(rng, 100, 16)
    with pytest.raises(ConfigError, match="index_factory"):
        build_index(x, None, "NotAnIndex", progress=False)
    with pytest.raises(ConfigError, match="lists"):
        build_index(x, None, "IVF256,Flat", progress=False)
    with pytest.raises(ConfigError, match="training"):
        build_index(x, None, "PQ8", progress=False)  # 256 centroids per sub-quantizer, 100 vectors
    with pytest.raises(ConfigError):
        build_index(x[:0], None, progress=False)


def test_save_load_search_params_and_recall(rng, tmp_path):
    x = _clustered(rng, 4000, 32)
    index, h = build_index(x, tmp_path / "ix", "IVF32,Flat", nprobe=4, header={"store_id": "abc"}, progress=False)
    loaded, lh = load_index(tmp_path / "ix")
    assert lh["store_id"] == "abc" and lh["ntotal"] == 4000 and lh["nprobe"] == 4 and lh["memory_bytes"] > 0
    assert faiss.extract_index_ivf(loaded).nprobe == 4
    q = x[:50]
    np.testing.assert_array_equal(index.search(q, 5)[1], loaded.search(q, 5)[1])
    r_low = recall(loaded, x, 300, k=2)
    set_search_params(loaded, nprobe=32)  # all lists: exact
    assert recall(loaded, x, 300, k=2) == 1.0 >= r_low
    flat, _ = build_index(x, None, "Flat", progress=False)
    assert recall(flat, x, 100, k=5) == 1.0
    (tmp_path / "ix" / "index.faiss").unlink()
    with pytest.raises(StoreError, match="missing"):
        load_index(tmp_path / "ix")


def test_hnsw_ef_search(rng):
    x = _clustered(rng, 2000, 16)
    index, _ = build_index(x, None, "IVF16_HNSW8,Flat", efSearch=7, nprobe=2, progress=False)
    ivf = faiss.extract_index_ivf(index)
    assert faiss.downcast_index(ivf.quantizer).hnsw.efSearch == 7 and ivf.nprobe == 2


def test_exact_search_blocks_match_faiss(rng):
    x, q = _clustered(rng, 1000, 8), _clustered(rng, 20, 8)
    d1, i1 = exact_search(x, q, 7, block_size=97)
    d2, i2 = faiss.knn(q, x, 7, metric=faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_allclose(d1, d2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(i1, i2)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "IVF16,PQ4x4np"])
def test_merge_shards_equals_single_index(rng, factory):
    x = _clustered(rng, 3000, 16)
    trained, cfg = train_index(x, factory)
    single = faiss.clone_index(trained)
    add_embeddings(single, x, progress=False)
    shards = []
    for lo, hi in ((0, 1000), (1000, 2200), (2200, 3000)):
        s = faiss.clone_index(trained)
        if factory == "Flat":
            add_embeddings(s, x[lo:hi], progress=False)  # flat ids are implicit: each shard from 0
        else:
            add_embeddings(s, x, lo, hi, progress=False)
        shards.append(s)
    merged = merge_shards(shards)
    assert merged.ntotal == 3000
    set_search_params(merged, nprobe=4)
    set_search_params(single, nprobe=4)
    d1, i1 = single.search(x[::37], 6)
    d2, i2 = merged.search(x[::37], 6)
    np.testing.assert_array_equal(i1, i2)
