"""Chunk store: writer/reader round trips and the gather hot path against a plain-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyretro.errors import StoreError
from pyretro.store import ChunkStore, ChunkStoreWriter


def random_docs(rng: np.random.Generator, n: int, chunk_len: int, vocab: int) -> list[np.ndarray]:
    """Documents of random lengths, always including empty, 1-token and exact-multiple lengths."""
    special = [0, 1, chunk_len - 1, chunk_len, chunk_len + 1, 2 * chunk_len, 0, 3]
    lens = list(rng.integers(0, 4 * chunk_len, n)) + special
    rng.shuffle(lens)
    return [rng.integers(0, vocab, int(k)) for k in lens]


def build(path, docs, chunk_len=8, vocab=1000, **kw) -> ChunkStore:
    with ChunkStoreWriter(path, chunk_len=chunk_len, vocab_size=vocab, **kw) as w:
        w.add_documents(docs)
    return ChunkStore.open(path, verify=True)


def reference_chunks(docs, chunk_len):
    """(doc id, start offset within doc) per chunk, by the definition."""
    out = []
    for d, doc in enumerate(docs):
        for s in range(0, len(doc), chunk_len):
            out.append((d, s))
    return out


def reference_gather(docs, chunk_len, ids, r, continuation, pad_id=0):
    chunks = reference_chunks(docs, chunk_len)
    ids = np.asarray(ids)
    toks = np.full(ids.shape + (r,), pad_id, np.int64)
    mask = np.zeros(ids.shape + (r,), bool)
    for pos in np.ndindex(ids.shape):
        i = int(ids[pos])
        if i == -1:
            continue
        d, s = chunks[i]
        stop = len(docs[d]) if continuation else min(s + chunk_len, len(docs[d]))
        row = docs[d][s:stop][:r]
        toks[pos][: len(row)] = row
        mask[pos][: len(row)] = True
    return toks, mask


@pytest.fixture
def store_and_docs(tmp_path, rng):
    docs = random_docs(rng, 40, 8, 1000)
    return build(tmp_path / "s", docs), docs


def test_round_trip_layout(store_and_docs):
    store, docs = store_and_docs
    ref = reference_chunks(docs, 8)
    assert len(store) == len(ref)
    assert store.num_docs == len(docs)
    assert store.num_tokens == sum(len(d) for d in docs)
    assert store.tokens.dtype == np.uint16 and store.vocab_size == 1000 and store.chunk_len == 8
    for d, doc in enumerate(docs):
        np.testing.assert_array_equal(store.document(d), doc)
        assert list(store.chunks_of_doc(d)) == [i for i, (dd, _) in enumerate(ref) if dd == d]
    for i, (d, s) in enumerate(ref):
        np.testing.assert_array_equal(store.chunk(i), docs[d][s:s + 8])
        assert 1 <= len(store.chunk(i)) <= 8
    np.testing.assert_array_equal(store.doc_of_chunk(np.arange(len(ref))), [d for d, _ in ref])
    assert store.doc_of_chunk(np.array([[0, 1]])).shape == (1, 2)


def test_views_are_read_only_and_zero_copy(store_and_docs):
    store, _ = store_and_docs
    for a in (store.tokens, store.doc_offsets, store.doc_chunks, store.chunk_doc):
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 1
    assert np.shares_memory(store.chunk(3), store.tokens)


def test_index_errors(store_and_docs):
    store, _ = store_and_docs
    for bad in (-1, len(store)):
        with pytest.raises(IndexError, match="out of range"):
            store.chunk(bad)
    with pytest.raises(IndexError, match=str(len(store))):
        store.doc_of_chunk([0, len(store)])
    with pytest.raises(IndexError):
        store.chunks_of_doc(store.num_docs)
    with pytest.raises(IndexError):
        store.document(-1)


def test_uint32_tokens_for_large_vocab(tmp_path, rng):
    docs = [rng.integers(0, 100_000, n) for n in (5, 0, 17)]
    store = build(tmp_path / "s", docs, chunk_len=4, vocab=100_000)
    assert store.tokens.dtype == np.uint32 and store.header["token_dtype"] == "uint32"
    toks, _ = store.gather(np.arange(len(store)))
    ref, _ = reference_gather(docs, 4, np.arange(len(store)), 8, True)
    np.testing.assert_array_equal(toks, ref)


def test_boundary_vocab_sizes(tmp_path):
    s = build(tmp_path / "a", [[65535, 0]], vocab=65536)
    assert s.tokens.dtype == np.uint16 and list(s.chunk(0)) == [65535, 0]
    s = build(tmp_path / "b", [[65536]], vocab=65537)
    assert s.tokens.dtype == np.uint32 and list(s.chunk(0)) == [65536]


def test_writer_rejects_bad_tokens(tmp_path):
    with ChunkStoreWriter(tmp_path / "s", chunk_len=4, vocab_size=10) as w:
        with pytest.raises(ValueError, match="token id 10 is outside"):
            w.add_document([1, 10])
        with pytest.raises(ValueError, match="token id -1"):
            w.add_document(np.array([-1, 3]))
        with pytest.raises(TypeError, match="integers"):
            w.add_document(np.array([1.5]))
        with pytest.raises(ValueError, match="1-D"):
            w.add_document(np.zeros((2, 2), np.int64))
        with pytest.raises(ValueError, match="sum"):
            w.add_batch(np.arange(5), [2, 2])
        w.add_document([9])
    assert ChunkStore.open(tmp_path / "s").num_docs == 1  # rejected documents left no trace
    with pytest.raises(ValueError, match="vocab_size"):
        ChunkStoreWriter(tmp_path / "t", chunk_len=4)
    with pytest.raises(ValueError, match="chunk_len"):
        ChunkStoreWriter(tmp_path / "t", chunk_len=0, vocab_size=5)


def test_add_batch_equals_add_document(tmp_path, rng):
    docs = random_docs(rng, 30, 8, 500)
    a = build(tmp_path / "a", docs, vocab=500)
    with ChunkStoreWriter(tmp_path / "b", chunk_len=8, vocab_size=500, buffer_tokens=7) as w:
        w.add_batch(np.concatenate(docs[:10]), [len(d) for d in docs[:10]])
        w.add_documents(docs[10:])
        assert (w.num_docs, w.num_tokens) == (len(docs), sum(len(d) for d in docs))
        assert w.num_chunks == len(a)
    b = ChunkStore.open(tmp_path / "b", verify=True)
    assert a.store_id == b.store_id  # content-derived id: identical content, identical id
    c = build(tmp_path / "c", docs[:-1] + [docs[-1][:-1] if len(docs[-1]) else [1]], vocab=500)
    assert c.store_id != a.store_id


def test_writer_copies_reused_buffers(tmp_path):
    buf = np.zeros(5, np.uint16)
    with ChunkStoreWriter(tmp_path / "s", chunk_len=4, vocab_size=100) as w:
        for i in range(3):
            buf[:] = i + 1
            w.add_document(buf)
            w.add_batch(buf, [2, 3])
    s = ChunkStore.open(tmp_path / "s")
    assert [int(s.document(d)[0]) for d in range(9)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_existing_path_needs_overwrite(tmp_path):
    build(tmp_path / "s", [[1, 2, 3]])
    with pytest.raises(FileExistsError, match="overwrite"):
        ChunkStoreWriter(tmp_path / "s", chunk_len=8, vocab_size=1000)
    s = build(tmp_path / "s", [[4, 5]], overwrite=True)
    assert list(s.chunk(0)) == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_empty_store(tmp_path):
    s = build(tmp_path / "s", [])
    assert len(s) == 0 and s.num_docs == 0 and s.num_tokens == 0
    toks, mask = s.gather(np.full((2, 3), -1))
    assert toks.shape == (2, 3, 16) and not mask.any() and not toks.any()
    s = build(tmp_path / "e", [[], []])
    assert len(s) == 0 and s.num_docs == 2


def test_tokenizer_text(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "retro": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ids = tok.encode("hello world retro hello").ids
    with ChunkStoreWriter(tmp_path / "s", chunk_len=2, tokenizer=tok) as w:
        w.add_document(ids)
    s = ChunkStore.open(tmp_path / "s", verify=True)
    assert s.vocab_size == 4 and s.tokenizer is not None
    assert s.text(0) == "hello world" and s.text(1) == "retro hello"
    assert s.header["tokenizer"]["fingerprint"].startswith("sha256:")
    tok.save(str(tmp_path / "tok.json"))
    with ChunkStoreWriter(tmp_path / "t", chunk_len=2, tokenizer=tmp_path / "tok.json") as w:
        w.add_document(ids)
    assert ChunkStore.open(tmp_path / "t").tokenizer_fingerprint == s.tokenizer_fingerprint
    no_tok = build(tmp_path / "u", [[1, 2]])
    with pytest.raises(StoreError, match="no tokenizer"):
        no_tok.text(0)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        ChunkStoreWriter(tmp_path / "v", chunk_len=2, vocab_size=2, tokenizer=tok)


# --- gather --------------------------------------------------------------------------------------
@pytest.mark.parametrize("continuation", [True, False])
@pytest.mark.parametrize("r", [None, 1, 5, 8, 13, 40])
def test_gather_matches_reference(store_and_docs, rng, continuation, r):
    store, docs = store_and_docs
    ids = rng.integers(-1, len(store), (7, 3))
    ids[0, 0] = len(store) - 1  # the last chunk: continuation runs into the end of the store
    toks, mask = store.gather(ids, with_continuation=continuation, r=r)
    rr = r or (16 if continuation else 8)
    ref_t, ref_m = reference_gather(docs, 8, ids, rr, continuation)
    assert toks.dtype == np.int64 and mask.dtype == np.bool_ and toks.shape == (7, 3, rr)
    np.testing.assert_array_equal(toks, ref_t)
    np.testing.assert_array_equal(mask, ref_m)


def test_gather_every_chunk_continuation_stops_at_document_end(store_and_docs):
    store, docs = store_and_docs
    ids = np.arange(len(store))
    toks, mask = store.gather(ids)
    ref_t, ref_m = reference_gather(docs, 8, ids, 16, True)
    np.testing.assert_array_equal(toks, ref_t)
    np.testing.assert_array_equal(mask, ref_m)
    # a document's last chunk never continues into the next document
    last = [store.chunks_of_doc(d)[-1] for d in range(store.num_docs) if len(store.chunks_of_doc(d))]
    for i in last:
        assert mask[i].sum() == len(store.chunk(i))


@pytest.mark.parametrize("out_dtype", [np.int64, np.int32, torch.int64, torch.int32])
def test_gather_into_out_buffers(store_and_docs, rng, out_dtype):
    store, docs = store_and_docs
    ids = rng.integers(-1, len(store), (5, 2))
    if isinstance(out_dtype, torch.dtype):
        out = torch.full((5, 2, 16), 77, dtype=out_dtype)
        mask = torch.ones((5, 2, 16), dtype=torch.bool)
        get = torch.Tensor.numpy
    else:
        out = np.full((5, 2, 16), 77, dtype=out_dtype)
        mask = np.ones((5, 2, 16), bool)
        get = np.asarray
    t, m = store.gather(ids, out=out, out_mask=mask, pad_id=-3)
    assert t is out and m is mask
    ref_t, ref_m = reference_gather(docs, 8, ids, 16, True, pad_id=-3)
    np.testing.assert_array_equal(get(out), ref_t)
    np.testing.assert_array_equal(get(mask), ref_m)


def test_gather_torch_in_torch_out(store_and_docs):
    store, docs = store_and_docs
    ids = torch.tensor([[3, -1], [0, 2]], dtype=torch.int32)
    t, m = store.gather(ids)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and m.dtype == torch.bool
    ref_t, ref_m = reference_gather(docs, 8, ids.numpy(), 16, True)
    np.testing.assert_array_equal(t.numpy(), ref_t)
    np.testing.assert_array_equal(m.numpy(), ref_m)


def test_gather_shapes(store_and_docs):
    store, docs = store_and_docs
    for shape in [(), (0,), (4,), (2, 0, 3), (1, 2, 3, 2)]:
        ids = np.zeros(shape, np.int64) + (len(store) // 2)
        t, m = store.gather(ids)
        assert t.shape == shape + (16,) and m.shape == shape + (16,)
        ref_t, _ = reference_gather(docs, 8, ids, 16, True)
        np.testing.assert_array_equal(t, ref_t)
    t, _ = store.gather([1, 2])  # a Python list works too
    assert t.shape == (2, 16)


def test_gather_bad_arguments(store_and_docs):
    store, _ = store_and_docs
    n = len(store)
    out = np.zeros((2, 16), np.int64)
    for bad in (n, -2, 10**12):
        with pytest.raises(IndexError, match=f"chunk id {bad} "):
            store.gather(np.array([0, bad]), out=out)
    assert not out.any()  # validated before anything was written
    with pytest.raises(TypeError, match="integer"):
        store.gather(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        store.gather(np.array([0, 1]), out=np.zeros((2, 15), np.int64))
    with pytest.raises(TypeError, match="int64 or int32"):
        store.gather(np.array([0, 1]), out=np.zeros((2, 16), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        store.gather(np.array([0, 1]), out=np.zeros((16, 2), np.int64).T)
    with pytest.raises(TypeError, match="bool"):
        store.gather(np.array([0, 1]), out_mask=np.zeros((2, 16), np.int8))
    with pytest.raises(ValueError, match="r: must be a positive"):
        store.gather(np.array([0, 1]), r=0)
    with pytest.raises(ValueError, match="int32"):
        store.gather(np.array([0]), out=np.zeros((1, 16), np.int32), pad_id=2**40)


def test_gather_raw_core(store_and_docs):
    """_C.store_gather, the entry point shared with pyretro.ops.gather_neighbors: mask may be None."""
    from pyretro._ext import _C
    from pyretro._tensor import view

    store, docs = store_and_docs
    ids = np.array([[0, -1, len(store) - 1]], np.int64)
    out = np.empty((1, 3, 20), np.int64)
    _C.store_gather(view(store.tokens), view(store.doc_offsets), view(store.doc_chunks), view(store.chunk_doc),
                    view(ids), 8, 20, view(out), None, 5, True)
    np.testing.assert_array_equal(out, reference_gather(docs, 8, ids, 20, True, pad_id=5)[0])
    tok32 = torch.from_numpy(store.tokens.astype(np.int32))
    _C.store_gather(view(tok32), view(store.doc_offsets), view(store.doc_chunks), view(store.chunk_doc),
                    view(ids), 8, 20, view(out), None, 5, False)
    np.testing.assert_array_equal(out, reference_gather(docs, 8, ids, 20, False, pad_id=5)[0])


@pytest.mark.parametrize("threads", [1, 3])
def test_gather_many_ids_threads(store_and_docs, rng, threads):
    import pyretro

    store, docs = store_and_docs
    try:
        pyretro.set_num_threads(threads)
        ids = rng.integers(-1, len(store), 5000)
        t, m = store.gather(ids)
    finally:
        pyretro.set_num_threads(None)
    ref_t, ref_m = reference_gather(docs, 8, ids, 16, True)
    np.testing.assert_array_equal(t, ref_t)
    np.testing.assert_array_equal(m, ref_m)


@st.composite
def _case(draw):
    chunk_len = draw(st.integers(1, 9))
    lens = draw(st.lists(st.integers(0, 4 * chunk_len + 3), min_size=0, max_size=12))
    seed = draw(st.integers(0, 2**31 - 1))
    n_chunks = sum(-(-k // chunk_len) for k in lens)
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    ids = draw(st.lists(st.integers(-1, max(n_chunks - 1, -1)), min_size=int(np.prod(shape)),
                        max_size=int(np.prod(shape))))
    r = draw(st.integers(1, 3 * chunk_len + 2))
    cont = draw(st.booleans())
    return chunk_len, lens, seed, np.array(ids, np.int64).reshape(shape), r, cont


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(_case())
def test_gather_property(tmp_path_factory, case):
    chunk_len, lens, seed, ids, r, cont = case
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 70_000, k) for k in lens]
    path = tmp_path_factory.mktemp("h") / "s"
    with ChunkStoreWriter(path, chunk_len=chunk_len, vocab_size=70_000, fsync=False) as w:
        w.add_documents(docs)
    store = ChunkStore.open(path)
    t, m = store.gather(ids, with_continuation=cont, r=r, pad_id=-1)
    ref_t, ref_m = reference_gather(docs, chunk_len, ids, r, cont, pad_id=-1)
    np.testing.assert_array_equal(t, ref_t)
    np.testing.assert_array_equal(m, ref_m)
