"""pyretro.ops.gather_neighbors / DeviceChunkStore: same rows as ChunkStore.gather and the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyretro.ops.gather import DeviceChunkStore, gather_neighbors
from pyretro.ops.reference.gather import gather_neighbors_reference
from pyretro.store import ChunkStore, ChunkStoreWriter


def make_store(path, rng, chunk_len=8, vocab=1000, n_docs=30, max_len=60):
    lens = rng.integers(1, max_len, size=n_docs)
    lens[::7] = chunk_len  # documents ending exactly on a chunk boundary
    lens[3] = 1
    with ChunkStoreWriter(path, chunk_len=chunk_len, vocab_size=vocab, fsync=False) as w:
        for n in lens:
            w.add_document(rng.integers(1, vocab, size=int(n)))
    return ChunkStore.open(path)


def torch_arrays(store):
    return [torch.from_numpy(np.array(a)) for a in (store.tokens, store.doc_offsets, store.doc_chunks,
                                                    store.chunk_doc)]


@pytest.fixture(params=[1000, 100_000], ids=["uint16", "uint32"])
def store(request, tmp_path, rng):
    return make_store(tmp_path / "s", rng, vocab=request.param)


@pytest.mark.parametrize("continuation", [True, False])
@pytest.mark.parametrize("r", [1, 8, 13, 40])
def test_matches_store_and_reference(store, rng, continuation, r):
    c = len(store)
    ids = rng.integers(-1, c, size=(4, 7, 3))
    ids[0, 0] = -1
    ids[1, :, 0] = c - 1  # last chunk: stops at the end of the store
    arrays = torch_arrays(store)
    out, mask = gather_neighbors(*arrays, torch.from_numpy(ids), store.chunk_len, r, pad_id=-5,
                                 continuation=continuation)
    assert out.dtype == torch.int64 and mask.dtype == torch.bool and out.shape == (4, 7, 3, r)
    so, sm = store.gather(ids, with_continuation=continuation, r=r, pad_id=-5)
    assert np.array_equal(out.numpy(), so) and np.array_equal(mask.numpy(), sm)
    ro, rm = gather_neighbors_reference(*arrays, torch.from_numpy(ids), store.chunk_len, r, -5, continuation)
    assert torch.equal(out, ro) and torch.equal(mask, rm)
    assert not mask[0, 0].any() and (out[0, 0] == -5).all()
    assert 0 < mask.float().mean() < 1  # real tokens and real padding both occur


def test_continuation_stays_in_document(tmp_path):
    with ChunkStoreWriter(tmp_path / "s", chunk_len=4, vocab_size=100, fsync=False) as w:
        w.add_document(np.arange(1, 11))  # chunks 0,1,2 (last one has 2 tokens)
        w.add_document(np.arange(50, 56))  # chunks 3,4
    s = ChunkStore.open(tmp_path / "s")
    out, mask = gather_neighbors(*torch_arrays(s), [1, 2, 3, -1], 4, 8)
    assert out[0].tolist() == [5, 6, 7, 8, 9, 10, 0, 0]
    assert out[1].tolist() == [9, 10, 0, 0, 0, 0, 0, 0]  # not continued into the next document
    assert out[2].tolist() == [50, 51, 52, 53, 54, 55, 0, 0]
    assert mask.sum(-1).tolist() == [6, 2, 6, 0]


def test_numpy_arrays_scalar_and_empty_ids(store):
    arrays = [store.tokens, store.doc_offsets, store.doc_chunks, store.chunk_doc]
    out, mask = gather_neighbors(*arrays, np.int64(2), store.chunk_len, 5)
    assert out.shape == (5,) and np.array_equal(out.numpy(), store.gather(2, r=5)[0])
    out, mask = gather_neighbors(*arrays, np.zeros((0, 2), np.int64), store.chunk_len, 5)
    assert out.shape == (0, 2, 5)


def test_out_of_range_ids(store):
    arrays = torch_arrays(store)
    for bad in (len(store), -2, 10**12):
        with pytest.raises(IndexError, match="neighbor_ids"):
            gather_neighbors(*arrays, torch.tensor([0, bad]), store.chunk_len, 4)


def test_bad_arguments(store):
    arrays = torch_arrays(store)
    ids = torch.tensor([0, 1])
    with pytest.raises(TypeError, match="neighbor_ids: expected integer"):
        gather_neighbors(*arrays, ids.double(), store.chunk_len, 4)
    with pytest.raises(ValueError, match="r: must be positive"):
        gather_neighbors(*arrays, ids, store.chunk_len, 0)
    with pytest.raises(ValueError, match="chunk_len: must be positive"):
        gather_neighbors(*arrays, ids, 0, 4)
    with pytest.raises(TypeError, match="tokens: dtype"):
        gather_neighbors(arrays[0].to(torch.float32), *arrays[1:], ids, store.chunk_len, 4)
    with pytest.raises(TypeError, match="uint16"):
        gather_neighbors(torch.zeros(4, dtype=torch.int16), *arrays[1:], ids, store.chunk_len, 4)
    with pytest.raises(TypeError, match="chunk_doc: dtype"):
        gather_neighbors(*arrays[:3], arrays[3].int(), ids, store.chunk_len, 4)
    with pytest.raises(ValueError, match="doc_chunks"):
        gather_neighbors(arrays[0], arrays[1], arrays[2][:-1], arrays[3], ids, store.chunk_len, 4)
    with pytest.raises(ValueError, match="neighbor_ids: on meta"):
        gather_neighbors(*arrays, ids.to("meta"), store.chunk_len, 4)


def test_device_chunk_store_cpu(store, rng):
    ds = DeviceChunkStore.from_store(store, "cpu")
    assert len(ds) == len(store) and ds.num_docs == store.num_docs and ds.num_tokens == store.num_tokens
    ids = rng.integers(-1, len(store), size=(9, 2))
    for cont in (True, False):
        out, mask = ds.gather(torch.from_numpy(ids), cont)
        so, sm = store.gather(ids, cont)
        assert np.array_equal(out.numpy(), so) and np.array_equal(mask.numpy(), sm)
    assert ds.to("cpu") is ds


def test_device_chunk_store_rejects_corrupt_arrays(store):
    a = [np.array(x) for x in (store.tokens, store.doc_offsets, store.doc_chunks, store.chunk_doc)]
    bad = [x.copy() for x in a]
    bad[3][0] = 1
    with pytest.raises(ValueError, match="chunk_doc: corrupt"):
        DeviceChunkStore.from_arrays(*bad, store.chunk_len, "cpu")
    bad = [x.copy() for x in a]
    bad[1][1] += 1
    with pytest.raises(ValueError, match="corrupt"):
        DeviceChunkStore.from_arrays(*bad, store.chunk_len, "cpu")
    with pytest.raises(ValueError, match="corrupt"):
        DeviceChunkStore.from_arrays(*a, store.chunk_len + 1, "cpu")


def test_opcheck_and_compile(store, rng):
    arrays = torch_arrays(store)
    ids = torch.from_numpy(rng.integers(-1, len(store), size=(3, 2)))
    torch.library.opcheck(torch.ops.pyretro.gather_neighbors.default,
                          (*arrays, ids, store.chunk_len, 12, 0, True, True))

    def f(ids):
        out, mask = gather_neighbors(*arrays, ids, store.chunk_len, 12)
        return out * mask

    torch._dynamo.reset()
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(ids)
    assert torch.equal(got, f(ids))


# --- CUDA (skipped without a GPU and a CUDA build) ---------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("continuation", [True, False])
@pytest.mark.parametrize("r", [1, 13, 33, 128])
def test_cuda_matches_store(store, rng, continuation, r):
    ds = DeviceChunkStore.from_store(store, "cuda")
    ids = rng.integers(-1, len(store), size=(5, 37))
    out, mask = ds.gather(torch.from_numpy(ids).cuda(), continuation, r=r, pad_id=7)
    assert out.is_cuda and mask.is_cuda
    so, sm = store.gather(ids, continuation, r=r, pad_id=7)
    assert np.array_equal(out.cpu().numpy(), so) and np.array_equal(mask.cpu().numpy(), sm)
    back = ds.to("cpu")
    assert torch.equal(back.tokens.view(torch.int16 if back.tokens.dtype == torch.uint16 else torch.int32),
                       torch.from_numpy(np.array(store.tokens)).view(
                           torch.int16 if back.tokens.dtype == torch.uint16 else torch.int32))


@pytest.mark.cuda
def test_cuda_out_of_range_and_unchecked(store):
    ds = DeviceChunkStore.from_store(store, "cuda")
    with pytest.raises(IndexError, match="neighbor_ids"):
        ds.gather(torch.tensor([0, len(store)], device="cuda"))
    out, mask = ds.gather(torch.tensor([len(store), -7], device="cuda"), check_ids=False)
    assert not mask.any() and (out == 0).all()  # unchecked bad ids are padded, never read out of bounds
    with pytest.raises(ValueError, match="neighbor_ids: on cpu"):
        ds.gather(torch.tensor([0]))
