"""Chunk store robustness: corrupt files, crashes, Megatron/numpy import, merge, concurrency, pickling."""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import pyretro
from pyretro.errors import MismatchError, StoreError
from pyretro.store import ChunkStore, ChunkStoreWriter, import_megatron, import_numpy, merge_stores

# The directory holding the pyretro package this test imports (source tree or site-packages).
PKG_PARENT = Path(pyretro.__file__).resolve().parents[1]


def random_docs(rng, n, chunk_len=8, vocab=1000):
    lens = list(rng.integers(0, 5 * chunk_len, n)) + [0, 1, chunk_len, chunk_len + 1]
    return [rng.integers(0, vocab, int(k)) for k in lens]


def build(path, docs, chunk_len=8, vocab=1000, **kw) -> ChunkStore:
    with ChunkStoreWriter(path, chunk_len=chunk_len, vocab_size=vocab, **kw) as w:
        w.add_documents(docs)
    return ChunkStore.open(path)


def expected_rows(docs, chunk_len, r):
    """All chunk rows (chunk + continuation) in chunk order, by definition."""
    rows = []
    for doc in docs:
        for s in range(0, len(doc), chunk_len):
            row = np.zeros(r, np.int64)
            part = doc[s:s + r]
            row[: len(part)] = part
            rows.append(row)
    return np.array(rows).reshape(-1, r)


# --- corrupt / truncated / wrong-version / missing -----------------------------------------------
@pytest.fixture
def good(tmp_path, rng):
    return build(tmp_path / "s", random_docs(rng, 20)).path


def _edit_header(path: Path, **changes) -> None:
    h = json.loads((path / "header.json").read_text())
    h.update(changes)
    (path / "header.json").write_text(json.dumps(h))


def test_open_missing(tmp_path, good):
    with pytest.raises(StoreError, match="does not exist"):
        ChunkStore.open(tmp_path / "nope")
    (good / "header.json").unlink()
    with pytest.raises(StoreError, match=r"header\.json: missing"):
        ChunkStore.open(good)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a directory, this is a file"):
        ChunkStore.open(tmp_path / "file")


def test_open_missing_array(good):
    (good / "chunk_doc.bin").unlink()
    with pytest.raises(StoreError, match=r"chunk_doc\.bin: missing"):
        ChunkStore.open(good)


@pytest.mark.parametrize("name", ["tokens.bin", "doc_offsets.bin", "doc_chunks.bin", "chunk_doc.bin"])
def test_open_truncated(good, name):
    f = good / name
    data = f.read_bytes()
    f.write_bytes(data[:-2])
    with pytest.raises(StoreError, match=rf"{name}: truncated"):
        ChunkStore.open(good)
    f.write_bytes(data + b"\0\0")
    with pytest.raises(StoreError, match=rf"{name}: too long"):
        ChunkStore.open(good)


def test_open_bad_header(good):
    (good / "header.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt header"):
        ChunkStore.open(good)


def test_open_wrong_version_and_format(good):
    h = (good / "header.json").read_text()
    _edit_header(good, version=2)
    with pytest.raises(StoreError, match="unsupported store version 2"):
        ChunkStore.open(good)
    (good / "header.json").write_text(h)
    _edit_header(good, format="something-else")
    with pytest.raises(StoreError, match="not a pyretro chunk store"):
        ChunkStore.open(good)


def test_open_header_inconsistent(good):
    h = json.loads((good / "header.json").read_text())
    _edit_header(good, num_tokens=h["num_tokens"] + 1)
    with pytest.raises(StoreError, match="'tokens' entry is inconsistent"):
        ChunkStore.open(good)
    (good / "header.json").write_text(json.dumps(h))
    _edit_header(good, chunk_len=h["chunk_len"] * 2)  # store_id binds chunk_len to the checksums
    with pytest.raises(StoreError, match="store_id"):
        ChunkStore.open(good)
    (good / "header.json").write_text(json.dumps(h))
    _edit_header(good, vocab_size=100_000)
    with pytest.raises(StoreError, match="token_dtype"):
        ChunkStore.open(good)


def test_corrupt_bytes_caught_by_verify(good):
    f = good / "tokens.bin"
    data = bytearray(f.read_bytes())
    data[10] ^= 0xFF
    f.write_bytes(bytes(data))
    ChunkStore.open(good)  # sizes are right: only the checksum can tell
    with pytest.raises(StoreError, match=r"tokens\.bin: checksum mismatch"):
        ChunkStore.open(good, verify=True)


def test_corrupt_index_never_reads_out_of_bounds(good):
    """A corrupted index file that passes the cheap checks makes gather raise, not crash."""
    store = ChunkStore.open(good)
    n, nd = len(store), store.num_docs
    cd = np.fromfile(good / "chunk_doc.bin", np.int64)
    cd[n // 2] = 10**15
    cd.tofile(good / "chunk_doc.bin")
    bad = ChunkStore.open(good)
    with pytest.raises(StoreError):
        ChunkStore.open(good, verify=True)
    with pytest.raises(ValueError, match="corrupt chunk store"):
        bad.gather(np.arange(n))
    cd[n // 2] = nd // 2
    cd.tofile(good / "chunk_doc.bin")
    off = np.fromfile(good / "doc_offsets.bin", np.int64)
    off[nd // 2] = 10**15
    off.tofile(good / "doc_offsets.bin")
    bad = ChunkStore.open(good)
    with pytest.raises(ValueError, match="corrupt chunk store"):
        bad.gather(np.arange(n))


def test_missing_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    with ChunkStoreWriter(tmp_path / "s", chunk_len=4, tokenizer=tok) as w:
        w.add_document([0, 1])
    (tmp_path / "s" / "tokenizer.json").write_text("{}")
    with pytest.raises(StoreError, match="fingerprint"):
        ChunkStore.open(tmp_path / "s", verify=True)
    (tmp_path / "s" / "tokenizer.json").unlink()
    with pytest.raises(StoreError, match=r"tokenizer\.json: missing"):
        ChunkStore.open(tmp_path / "s")


# --- crashes before finalize -------------------------------------------------------------------
def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_exception_inside_with_leaves_nothing(tmp_path, rng):
    with pytest.raises(RuntimeError, match="boom"):
        with ChunkStoreWriter(tmp_path / "s", chunk_len=8, vocab_size=1000, buffer_tokens=5) as w:
            w.add_documents(random_docs(rng, 10))
            raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []
    with pytest.raises(StoreError):
        ChunkStore.open(tmp_path / "s")


def test_failure_during_finalize_leaves_nothing(tmp_path, rng, monkeypatch):
    w = ChunkStoreWriter(tmp_path / "s", chunk_len=8, vocab_size=1000)
    w.add_documents(random_docs(rng, 5))

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError, match="disk full"):
        w.finalize()
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError, match="aborted"):
        w.add_document([1])


_KILLED_WRITER = """
import sys, time
import numpy as np
from pyretro.store import ChunkStoreWriter
w = ChunkStoreWriter(sys.argv[1], chunk_len=8, vocab_size=1000, buffer_tokens=16)
for i in range(200):
    w.add_document(np.arange(i % 50) % 1000)
print("ready", flush=True)
time.sleep(120)
"""


def test_sigkill_mid_write_leaves_no_store(tmp_path):
    target = tmp_path / "s"
    env = dict(os.environ, PYTHONPATH=str(PKG_PARENT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
    try:
        assert p.stdout.readline().strip() == b"ready"  # data has been flushed to the temp files
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    assert not target.exists()
    with pytest.raises(StoreError):
        ChunkStore.open(target)
    temps = list(tmp_path.iterdir())
    assert temps and all(t.name.startswith(".s.tmp-") for t in temps)
    for t in temps:  # the half-written directory is not a store either
        assert (t / "tokens.bin").stat().st_size > 0
        with pytest.raises(StoreError, match="missing"):
            ChunkStore.open(t)


# --- Megatron import ---------------------------------------------------------------------------
_MEGATRON_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.uint16: 8}


def write_megatron(prefix: Path, docs: list[list[np.ndarray]], dtype, shuffle_bin: bool = False) -> None:
    """A test-local writer following the public .bin/.idx description (RETRO_FACTS.md)."""
    seqs = [s for doc in docs for s in doc]
    dtype = np.dtype(dtype)
    order = list(range(len(seqs)))
    if shuffle_bin:  # sequences stored out of order in .bin (offsets still point at them)
        order = order[::-1]
    pointers = [0] * len(seqs)
    with open(str(prefix) + ".bin", "wb") as f:
        pos = 0
        for i in order:
            pointers[i] = pos
            data = np.asarray(seqs[i], dtype).tobytes()
            f.write(data)
            pos += len(data)
    doc_idx = np.cumsum([0] + [len(doc) for doc in docs])
    with open(str(prefix) + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", _MEGATRON_CODES[dtype.type]))
        f.write(struct.pack("<Q", len(seqs)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(np.array([len(s) for s in seqs], "<i4").tobytes())
        f.write(np.array(pointers, "<i8").tobytes())
        f.write(np.array(doc_idx, "<i8").tobytes())


def megatron_docs(rng, vocab):
    docs = []
    for _ in range(9):
        nseq = int(rng.integers(0, 4))  # a document of 0 sequences is an empty document
        docs.append([rng.integers(0, vocab, int(rng.integers(0, 30))) for _ in range(nseq)])
    docs.append([np.array([vocab - 1])])
    return docs


@pytest.mark.parametrize("dtype,vocab", [(np.uint16, 60_000), (np.int32, 100_000), (np.int32, 500)])
@pytest.mark.parametrize("shuffle_bin", [False, True])
def test_import_megatron(tmp_path, rng, monkeypatch, dtype, vocab, shuffle_bin):
    import pyretro.store.importers as imp

    monkeypatch.setattr(imp, "BATCH_TOKENS", 16)  # several batches of documents
    docs = megatron_docs(rng, vocab)
    write_megatron(tmp_path / "corpus", docs, dtype, shuffle_bin)
    store = ChunkStore.open(import_megatron(tmp_path / "corpus", tmp_path / "s", chunk_len=8), verify=True)
    flat = [np.concatenate(d) if d else np.zeros(0, np.int64) for d in docs]
    assert store.num_docs == len(docs) and store.vocab_size == vocab  # max id + 1
    for d, doc in enumerate(flat):
        np.testing.assert_array_equal(store.document(d), doc)
    direct = build(tmp_path / "direct", flat, vocab=vocab)
    assert direct.store_id == store.store_id


def test_import_megatron_several_files(tmp_path, rng):
    a, b = megatron_docs(rng, 300), megatron_docs(rng, 300)
    write_megatron(tmp_path / "a", a, np.uint16)
    write_megatron(tmp_path / "b", b, np.int64)
    out = import_megatron([tmp_path / "a.bin", tmp_path / "a.idx", tmp_path / "b"], tmp_path / "s",
                          chunk_len=4, vocab_size=300)
    store = ChunkStore.open(out)
    assert store.num_docs == len(a) + len(b)
    np.testing.assert_array_equal(store.document(len(a)), np.concatenate(b[0]) if b[0] else [])


def test_import_megatron_bad_files(tmp_path, rng):
    write_megatron(tmp_path / "c", megatron_docs(rng, 300), np.uint16)
    idx = tmp_path / "c.idx"
    good = idx.read_bytes()
    with pytest.raises(StoreError, match=r"nope\.idx: missing"):
        import_megatron(tmp_path / "nope", tmp_path / "s")
    idx.write_bytes(b"XXIDIDX\x00\x00" + good[9:])
    with pytest.raises(StoreError, match="bad magic"):
        import_megatron(tmp_path / "c", tmp_path / "s")
    idx.write_bytes(good[:9] + struct.pack("<Q", 2) + good[17:])
    with pytest.raises(StoreError, match="unsupported version 2"):
        import_megatron(tmp_path / "c", tmp_path / "s")
    idx.write_bytes(good[:17] + bytes([6]) + good[18:])  # dtype code 6: float64
    with pytest.raises(StoreError, match="holds no token ids"):
        import_megatron(tmp_path / "c", tmp_path / "s")
    idx.write_bytes(good[:-5])
    with pytest.raises(StoreError, match="truncated"):
        import_megatron(tmp_path / "c", tmp_path / "s")
    idx.write_bytes(good[:20])
    with pytest.raises(StoreError, match="truncated"):
        import_megatron(tmp_path / "c", tmp_path / "s")
    idx.write_bytes(good)
    binf = tmp_path / "c.bin"
    binf.write_bytes(binf.read_bytes()[:-4])
    with pytest.raises(StoreError, match=r"c\.bin: truncated"):
        import_megatron(tmp_path / "c", tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_import_megatron_token_out_of_vocab(tmp_path, rng):
    write_megatron(tmp_path / "c", [[np.array([1, 2, 299])]], np.uint16)
    with pytest.raises(ValueError, match="token id 299"):
        import_megatron(tmp_path / "c", tmp_path / "s", vocab_size=200)
    assert _leftovers(tmp_path) == ["c.bin", "c.idx"]


# --- numpy import and merge --------------------------------------------------------------------
def test_import_numpy(tmp_path, rng, monkeypatch):
    import pyretro.store.importers as imp

    docs = random_docs(rng, 30)
    tokens = np.concatenate(docs).astype(np.int32)
    offsets = np.cumsum([0] + [len(d) for d in docs])
    monkeypatch.setattr(imp, "BATCH_TOKENS", 20)  # several batches, documents longer than a batch
    assert max(len(d) for d in docs) > 20
    batches = list(imp.doc_batches(offsets))
    assert len(batches) > 5 and [b[0] for b in batches[1:]] == [b[1] for b in batches[:-1]]
    s = ChunkStore.open(import_numpy(tokens, offsets, tmp_path / "s", chunk_len=8, vocab_size=1000), verify=True)
    assert s.store_id == build(tmp_path / "ref", docs).store_id
    with pytest.raises(ValueError, match="doc_offsets"):
        import_numpy(tokens, offsets[::-1], tmp_path / "t", vocab_size=1000)
    with pytest.raises(ValueError, match="doc_offsets"):
        import_numpy(tokens, offsets[:-1], tmp_path / "t", vocab_size=1000)


def test_merge_stores(tmp_path, rng):
    docs = random_docs(rng, 40)
    shards = [build(tmp_path / f"shard{i}", docs[i::3]).path for i in range(3)]
    order = [d for i in range(3) for d in docs[i::3]]
    merged = ChunkStore.open(merge_stores(shards, tmp_path / "m"), verify=True)
    assert merged.store_id == build(tmp_path / "ref", order).store_id
    np.testing.assert_array_equal(merged.gather(np.arange(len(merged)))[0], expected_rows(order, 8, 16))


def test_merge_stores_streams_one_input_at_a_time(tmp_path, rng, monkeypatch):
    """Bounded memory: never two inputs open at once, tokens read in small batches (documents longer than a
    batch included); the result is the same store as one writer would make."""
    import gc
    import weakref

    import pyretro.store.importers as imp

    docs = random_docs(rng, 50)
    assert max(len(d) for d in docs) > 16
    shards = [build(tmp_path / f"shard{i}", docs[i::4]).path for i in range(4)]
    live: weakref.WeakSet = weakref.WeakSet()
    peak = [0]
    real_open = imp.ChunkStore.open

    def tracking_open(path, *a, **kw):
        gc.collect()  # count only stores something still references
        s = real_open(path, *a, **kw)
        live.add(s)
        peak[0] = max(peak[0], len(live))
        return s

    monkeypatch.setattr(imp.ChunkStore, "open", tracking_open)
    reads = []
    real_fromfile = np.fromfile
    monkeypatch.setattr(imp.np, "fromfile", lambda *a, **kw: reads.append(kw["count"]) or real_fromfile(*a, **kw))
    out = merge_stores(shards, tmp_path / "m", batch_tokens=16)
    monkeypatch.undo()
    assert peak[0] == 1
    assert len(reads) > 8 and sum(reads) == sum(len(d) for d in docs)
    order = [d for i in range(4) for d in docs[i::4]]
    assert ChunkStore.open(out, verify=True).store_id == build(tmp_path / "ref", order).store_id


def test_merge_mismatch(tmp_path, rng):
    a = build(tmp_path / "a", random_docs(rng, 3)).path
    b = build(tmp_path / "b", random_docs(rng, 3), chunk_len=4).path
    c = build(tmp_path / "c", random_docs(rng, 3, vocab=900), vocab=900).path
    with pytest.raises(MismatchError, match="chunk_len"):
        merge_stores([a, b], tmp_path / "m")
    with pytest.raises(MismatchError, match="vocab_size"):
        merge_stores([a, c], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_merge_keeps_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    paths = []
    for i in range(2):
        with ChunkStoreWriter(tmp_path / f"s{i}", chunk_len=2, tokenizer=tok) as w:
            w.add_document([i, 1 - i, 0])
        paths.append(tmp_path / f"s{i}")
    m = ChunkStore.open(merge_stores(paths, tmp_path / "m"), verify=True)
    assert m.tokenizer_fingerprint == ChunkStore.open(paths[0]).tokenizer_fingerprint
    assert m.text(2) == "b a"
    plain = build(tmp_path / "plain", [[1]], chunk_len=2, vocab=3)
    with pytest.raises(MismatchError, match="tokenizer"):
        merge_stores([paths[0], plain.path], tmp_path / "m2")


# --- concurrency and pickling ------------------------------------------------------------------
def test_concurrent_reader_threads(tmp_path, rng):
    docs = random_docs(rng, 60)
    store = build(tmp_path / "s", docs)
    expect = expected_rows(docs, 8, 16)
    id_sets = [rng.integers(0, len(store), 300) for _ in range(4)]
    errors: list[BaseException] = []

    def work(ids):
        try:
            for _ in range(20):
                t, _ = store.gather(ids)
                np.testing.assert_array_equal(t, expect[ids])
        except BaseException as e:  # reported on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(ids,)) for ids in id_sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_pickle_reopens_by_path(tmp_path, rng):
    docs = random_docs(rng, 10)
    store = build(tmp_path / "s", docs)
    data = pickle.dumps(store)
    assert len(data) < 1000  # by path, not by content
    clone = pickle.loads(data)
    assert clone.store_id == store.store_id and clone.path == store.path
    np.testing.assert_array_equal(clone.tokens, store.tokens)
    build(tmp_path / "s", docs[::-1], overwrite=True)  # replaced under the same path
    with pytest.raises(MismatchError, match="changed since it was pickled"):
        pickle.loads(data)


class _Neighbours:
    def __init__(self, store, ids):
        self.store, self.ids = store, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.store.gather(self.ids[i])[0]


def test_dataloader_worker_processes(tmp_path, rng):
    import torch

    docs = random_docs(rng, 30)
    store = build(tmp_path / "s", docs)
    ids = rng.integers(-1, len(store), (12, 2))
    loader = torch.utils.data.DataLoader(_Neighbours(store, ids), batch_size=4, num_workers=2,
                                         multiprocessing_context="fork")
    got = torch.cat(list(loader)).numpy()
    want = np.zeros((12, 2, 16), np.int64)
    rows = expected_rows(docs, 8, 16)
    want[ids >= 0] = rows[ids[ids >= 0]]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("token_dtype_vocab", [1000, 70_000])  # uint16 and uint32 token files
def test_in_memory_store_gathers_like_the_mapped_one(tmp_path, rng, token_dtype_vocab):
    docs = random_docs(rng, 30, vocab=token_dtype_vocab)
    mapped = build(tmp_path / "s", docs, vocab=token_dtype_vocab)
    ram = ChunkStore.open(mapped.path, in_memory=True, verify=True)
    assert ram.in_memory and not mapped.in_memory
    for name in ("tokens", "doc_offsets", "doc_chunks", "chunk_doc"):
        a, b = getattr(mapped, name), getattr(ram, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
        assert not b.flags.writeable  # a private copy, still read-only to callers
    ids = rng.integers(-1, len(mapped), (17, 3))
    for cont in (True, False):
        for got, want in zip(ram.gather(ids, cont, r=11), mapped.gather(ids, cont, r=11), strict=True):
            assert np.array_equal(got, want)
    clone = pickle.loads(pickle.dumps(ram))  # DataLoader workers reopen it in memory too
    assert clone.in_memory and np.array_equal(clone.gather(ids, r=11)[0], mapped.gather(ids, r=11)[0])
    with pytest.raises(IndexError):
        ram.gather(np.array([len(ram)]), r=11)


def test_in_memory_open_checks_sizes_like_mmap(good):
    (good / "tokens.bin").write_bytes((good / "tokens.bin").read_bytes()[:-2])
    with pytest.raises(StoreError, match="truncated"):
        ChunkStore.open(good, in_memory=True)
