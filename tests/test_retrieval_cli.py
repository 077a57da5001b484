"""Embedding resume, and the `pyretro db embed|index|query|build` commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _retrieval_fixtures import make_store

from pyretro.cli.main import main
from pyretro.errors import ConfigError, MismatchError, StoreError
from pyretro.retrieval import HashingEmbedder, NeighborTable, embed_store, open_embeddings
from pyretro.retrieval.pipeline import apply_overrides, resolve

pytest.importorskip("faiss")


class Dying(HashingEmbedder):
    """Raises on the n-th call, as if the process were killed mid-block."""

    def __init__(self, die_at: int, **kw):
        super().__init__(**kw)
        self.calls, self.die_at = 0, die_at

    def embed(self, texts):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return super().embed(texts)


def test_embed_resume_after_kill_is_identical(tmp_path):
    store = make_store(tmp_path / "s", num_docs=20, seed=2)
    embed_store(store, HashingEmbedder(dim=16), tmp_path / "ref", block_size=6, batch_size=4, progress=False)
    _, ref = open_embeddings(tmp_path / "ref", store)
    with pytest.raises(KeyboardInterrupt):
        embed_store(store, Dying(5, dim=16), tmp_path / "e", block_size=6, batch_size=4, progress=False)
    done = sorted(p.name for p in (tmp_path / "e" / "blocks").iterdir())
    assert 0 < len(done) < -(-len(store) // 6)
    with pytest.raises(StoreError, match="incomplete"):
        open_embeddings(tmp_path / "e")
    # garbage in the unfinished rows must be overwritten by the resumed run
    arr = np.load(tmp_path / "e" / "data.npy", mmap_mode="r+")
    arr[len(done) * 6 :] = 7.0
    arr.flush()
    del arr
    calls = Dying(10**9, dim=16)
    embed_store(store, calls, tmp_path / "e", block_size=6, batch_size=4, progress=False)
    pending = [min(6, len(store) - 6 * b) for b in range(len(done), -(-len(store) // 6))]
    assert calls.calls == sum(-(-r // 4) for r in pending)  # finished blocks were not embedded again
    np.testing.assert_array_equal(open_embeddings(tmp_path / "e", store)[1], ref)
    with pytest.raises(MismatchError, match="embedder"):
        embed_store(store, HashingEmbedder(dim=16, ngram=1), tmp_path / "e", block_size=6, progress=False)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("x")
    with pytest.raises(StoreError, match="refusing"):
        embed_store(store, HashingEmbedder(dim=16), tmp_path / "precious", overwrite=True, progress=False)


def test_cli_embed_index_query(tmp_path, capsys):
    store = make_store(tmp_path / "s", num_docs=12, seed=4)
    assert main(["db", "embed", str(tmp_path / "s"), str(tmp_path / "e"), "--embedder", "hashing:32",
                 "--block-size", "9", "--quiet"]) == 0
    assert main(["db", "index", str(tmp_path / "e"), str(tmp_path / "ix"), "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["factory"] == "Flat" and info["ntotal"] == len(store) and info["recall@2"] == 1.0
    assert main(["db", "query", str(tmp_path / "nb"), "--store", str(tmp_path / "s"), "--index", str(tmp_path / "ix"),
                 "--embeddings", str(tmp_path / "e"), "--k", "3", "--chunks-per-sample", "2", "--quiet"]) == 0
    t = NeighborTable.open(tmp_path / "nb", store)
    assert t.k_saved == 3 and t.header["embedder"]["dim"] == 32 and t.header["groups_sha1"]
    other = make_store(tmp_path / "o", num_docs=3, seed=8)
    assert main(["db", "embed", str(tmp_path / "o"), str(tmp_path / "oe"), "--embedder", "hashing:32", "--quiet"]) == 0
    # a query store that is not the indexed one, without doc_map: a clear error, exit code 1
    rc = main(["db", "query", str(tmp_path / "nb2"), "--store", str(tmp_path / "o"), "--index", str(tmp_path / "ix"),
               "--embeddings", str(tmp_path / "oe"), "--quiet"])
    assert rc == 1 and "the index holds" in capsys.readouterr().err
    assert main(["db", "query", str(tmp_path / "nb2"), "--store", str(tmp_path / "o"), "--db-store", str(tmp_path / "s"),
                 "--index", str(tmp_path / "ix"), "--embeddings", str(tmp_path / "oe"), "--exclude", "none",
                 "--quiet"]) == 0
    assert NeighborTable.open(tmp_path / "nb2", other, store).neighbors.shape == (len(other), 20)


def test_cli_build_with_config_and_overrides(tmp_path, capsys):
    make_store(tmp_path / "s", num_docs=10, seed=6)
    cfg = tmp_path / "db.toml"
    cfg.write_text(f'[build]\nout = "{tmp_path / "db"}"\nprogress = false\n[store]\npath = "{tmp_path / "s"}"\n'
                   '[embed]\nembedder = "hashing:16"\n[query]\nk = 4\n')
    assert main(["db", "build", str(cfg), "--query.k=2", "--embed.block_size=5"]) == 0
    t = NeighborTable.open(tmp_path / "db" / "neighbors")
    assert t.k_saved == 2
    before = (tmp_path / "db" / "index" / "index.faiss").stat().st_mtime_ns
    assert main(["db", "build", str(cfg), "--query.k=2", "--embed.block_size=5"]) == 0  # all stages reused
    assert (tmp_path / "db" / "index" / "index.faiss").stat().st_mtime_ns == before
    assert main(["db", "build", str(cfg), "--query.k=2", "--embed.block_size=5", "--index.factory=IVF2,Flat"]) == 0
    assert (tmp_path / "db" / "index" / "index.faiss").stat().st_mtime_ns != before  # new request: rebuilt
    assert NeighborTable.open(tmp_path / "db" / "neighbors").header["index"]["factory"] == "IVF2,Flat"
    assert main(["db", "build", str(cfg), "--query.kk=2"]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_config_resolution():
    base = {"build": {"out": "x"}, "store": {"path": "s"}}
    r = resolve(apply_overrides(base, ["--index.nprobe=16", "--embed.embedder=st", "--build.overwrite=true"]))
    assert r["index"]["nprobe"] == 16 and r["embed"]["embedder"] == "st" and r["build"]["overwrite"] is True
    assert r["query"]["k"] == 20
    for bad in (["--index"], ["nodot=1"]):
        with pytest.raises(ConfigError):
            apply_overrides(base, bad)
    with pytest.raises(ConfigError, match="section"):
        resolve({**base, "bogus": {}})
    with pytest.raises(ConfigError, match="out"):
        resolve({"store": {"path": "s"}})
    with pytest.raises(ConfigError, match="ingest"):
        resolve({"build": {"out": "x"}})


def test_example_config_resolves():
    from pathlib import Path

    from pyretro.retrieval.pipeline import load_toml

    cfg = resolve(load_toml(Path(__file__).parents[1] / "configs" / "db_build_example.toml"))
    assert cfg["embed"]["embedder"] == "st" and cfg["ingest"]["inputs"] and cfg["query"]["chunks_per_sample"] == 32


def test_build_from_raw_text_via_ingest(tmp_path):
    pytest.importorskip("pyretro.data.ingest")
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(60)]
    for d in range(8):
        (raw / f"doc{d}.txt").write_text(" ".join(rng.choice(words, 120)))
    cfg = tmp_path / "db.toml"
    cfg.write_text(f'[build]\nout = "{tmp_path / "db"}"\nprogress = false\n'
                   f'[ingest]\ninputs = ["{raw}/*.txt"]\nvocab_size = 300\nchunk_len = 16\nnum_workers = 1\n'
                   '[embed]\nembedder = "hashing:16"\n[query]\nk = 3\nchunks_per_sample = 4\n')
    assert main(["db", "build", str(cfg)]) == 0
    from pyretro.store import ChunkStore

    store = ChunkStore.open(tmp_path / "db" / "store")
    nb = NeighborTable.open(tmp_path / "db" / "neighbors", store).neighbors
    assert store.num_docs == 8 and nb.shape == (len(store), 3) and (nb[:, 0] >= 0).all()
    groups = np.arange(len(store)) // 4
    for i in range(len(store)):
        bad = set(store.chunk_doc[groups == groups[i]].tolist())
        assert not bad & {int(store.chunk_doc[j]) for j in nb[i] if j >= 0}
