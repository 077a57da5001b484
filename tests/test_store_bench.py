"""The gather benchmark runs end to end on a tiny store (no timing assertions)."""

from pyretro.benchmarks.store import numpy_gather, run


def test_benchmark_quick(tmp_path):
    rows = run("cpu", quick=True, cache_dir=str(tmp_path), reps=2, num_queries=16)
    assert [(r["name"], r["baseline"]) for r in rows] == [
        ("gather (out buffers given)", "numpy memmap fancy indexing"),
        ("gather (out buffers given)", "memcpy same bytes"),
        ("gather (allocating)", "numpy memmap fancy indexing"),
        ("gather, store in RAM (in_memory=True)", "memcpy same bytes"),
        ("gather, store in RAM (in_memory=True)", "numpy memmap fancy indexing"),
    ]
    for r in rows:
        assert r["time_ms"] > 0 and r["ratio"] > 0 and r["ids"] == [16, 2] and r["r"] == 128
    assert len(list(tmp_path.iterdir())) == 1  # the store is cached for the next run
    run("cpu", quick=True, cache_dir=str(tmp_path), reps=1, num_queries=4)


def test_numpy_baseline_handles_missing_ids(tmp_path, rng):
    import numpy as np

    from pyretro.store import ChunkStore, ChunkStoreWriter

    with ChunkStoreWriter(tmp_path / "s", chunk_len=4, vocab_size=100) as w:
        w.add_documents([rng.integers(0, 100, n) for n in (3, 9, 0, 5)])
    s = ChunkStore.open(tmp_path / "s")
    ids = np.array([[0, -1], [3, 4]])
    t, m = numpy_gather(s.tokens, s.chunk_doc, s.doc_offsets, s.doc_chunks, ids, 4, 8)
    t2, m2 = s.gather(ids)
    np.testing.assert_array_equal(t, t2)
    np.testing.assert_array_equal(m, m2)
