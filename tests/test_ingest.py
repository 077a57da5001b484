"""Ingestion: text / JSONL / Megatron -> chunk store, shard planning, resume, and bad input."""

from __future__ import annotations

import json
import struct
from itertools import pairwise

import numpy as np
import pytest
from tokenizers import Tokenizer, models

from pyretro.cli.main import main as cli_main
from pyretro.data import sources
from pyretro.data.ingest import FAIL_ENV, ingest
from pyretro.data.synthetic import generate, write_jsonl
from pyretro.data.tokenizer import fingerprint, save_tokenizer, train_bpe
from pyretro.store import ChunkStore


@pytest.fixture(scope="module")
def corpus():
    return generate(60, 3, seed=5)


@pytest.fixture(scope="module")
def tok(corpus):
    return train_bpe((d["text"] for d in corpus.documents), 500)


def _texts(store: ChunkStore, eod: bool = True) -> list[str]:
    tok = store.tokenizer
    out = []
    for d in range(store.num_docs):
        ids = store.document(d).tolist()
        if eod:
            assert ids[-1] == 1
            ids = ids[:-1]
        out.append(tok.decode(ids, skip_special_tokens=False))
    return out


def _same_store(a, b) -> None:
    sa, sb = ChunkStore.open(a), ChunkStore.open(b)
    np.testing.assert_array_equal(sa.tokens, sb.tokens)
    np.testing.assert_array_equal(sa.doc_offsets, sb.doc_offsets)
    assert sa.tokenizer_fingerprint == sb.tokenizer_fingerprint and len(sa) == len(sb)


def test_jsonl_round_trip_many_shards(tmp_path, corpus, tok):
    src = write_jsonl(tmp_path / "docs.jsonl", corpus.documents)
    r = ingest(src, tmp_path / "db", tokenizer=tok, shard_bytes=5000, num_workers=1, chunk_len=16, progress=False)
    assert r.shards > 5 and r.shards_skipped == 0
    s = ChunkStore.open(tmp_path / "db", verify=True)
    assert s.chunk_len == 16 and s.num_docs == len(corpus.documents)
    assert _texts(s) == [d["text"] for d in corpus.documents]
    assert s.tokenizer_fingerprint == fingerprint(tok) == r.tokenizer_fingerprint
    assert (r.num_docs, r.num_tokens, r.num_chunks) == (s.num_docs, s.num_tokens, len(s))
    assert not (tmp_path / ".db.ingest").exists()  # work dir cleaned up


def test_trained_tokenizer_custom_field_no_eod(tmp_path, corpus):
    rows = [{"body": d["text"], "n": i} for i, d in enumerate(corpus.documents[:50])]
    src = write_jsonl(tmp_path / "docs.ndjson", rows)
    r = ingest(src, tmp_path / "db", field="body", vocab_size=400, append_eod=False, num_workers=1, progress=False)
    s = ChunkStore.open(r.path)
    assert s.tokenizer is not None and s.vocab_size <= 400
    assert _texts(s, eod=False) == [x["body"] for x in rows]


def test_worker_processes_give_identical_store(tmp_path, corpus, tok):
    src = write_jsonl(tmp_path / "docs.jsonl", corpus.documents)
    ingest(src, tmp_path / "a", tokenizer=tok, shard_bytes=20000, num_workers=1, progress=False)
    ingest(src, tmp_path / "b", tokenizer=tok, shard_bytes=20000, num_workers=2, progress=False)
    _same_store(tmp_path / "a", tmp_path / "b")


def test_text_files_one_document_per_file(tmp_path, tok):
    d = tmp_path / "txt"
    (d / "sub").mkdir(parents=True)
    texts = {"b.txt": "second file\nwith two lines\n", "a.txt": "first", "sub/c.md": "", ".hidden": "skip me"}
    for name, t in texts.items():
        (d / name).write_text(t)
    s = ChunkStore.open(ingest(d, tmp_path / "db", tokenizer=tok, num_workers=1, progress=False).path)
    assert _texts(s) == ["first", "second file\nwith two lines\n", ""]  # sorted; empty file = empty document


def test_glob_inputs_keep_order(tmp_path, tok):
    for i, name in enumerate(["b.jsonl", "a.jsonl", "c.txt"]):
        (tmp_path / name).write_text(json.dumps({"text": f"doc {name}"}) + "\n" + json.dumps({"text": f"{i}"}) + "\n")
    r = ingest([str(tmp_path / "b.jsonl"), str(tmp_path / "[a]*.jsonl")], tmp_path / "db", tokenizer=tok,
               num_workers=1, progress=False)
    assert _texts(ChunkStore.open(r.path)) == ["doc b.jsonl", "0", "doc a.jsonl", "1"]
    with pytest.raises(FileNotFoundError, match="matches no files"):
        ingest(str(tmp_path / "*.parquet"), tmp_path / "db2", tokenizer=tok, progress=False)


def _paragraph_file(path, rng, n=40):
    blocks = []
    with open(path, "w") as f:
        f.write("\n \n")  # leading blank lines
        for i in range(n):
            lines = [f"block {i} line {j} " + "x" * int(rng.integers(0, 30)) for j in range(int(rng.integers(1, 4)))]
            blocks.append("\n".join(lines))
            f.write(blocks[-1] + "\n" + "\n" * int(rng.integers(1, 3)) + (" \t\n" if i % 7 == 0 else ""))
    return blocks


@pytest.mark.parametrize("shard_bytes", [1, 7, 50, 333, 10**9])
def test_shard_cuts_never_split_records(tmp_path, rng, shard_bytes):
    p = tmp_path / "p.txt"
    blocks = _paragraph_file(p, rng)
    lines = [ln for b in blocks for ln in b.split("\n")]
    for mode, want in [("paragraph", blocks), ("line", lines)]:
        shards = sources.plan_shards([p], "text", mode, shard_bytes)
        got = [t for sh in shards for pc in sh for t, _ in sources.iter_documents(pc, "text", mode)]
        assert got == want, mode
        covered = [(pc.start, pc.end) for sh in shards for pc in sh]
        assert covered[0][0] == 0 and covered[-1][1] == p.stat().st_size
        assert all(a[1] == b[0] for a, b in pairwise(covered))


def test_paragraph_and_line_modes_end_to_end(tmp_path, rng, tok):
    p = tmp_path / "p.txt"
    blocks = _paragraph_file(p, rng)
    s = ChunkStore.open(ingest(p, tmp_path / "db", tokenizer=tok, text_mode="paragraph", shard_bytes=300,
                               num_workers=1, progress=False).path)
    assert _texts(s) == blocks
    s = ChunkStore.open(ingest(p, tmp_path / "db2", tokenizer=tok, text_mode="line", num_workers=1,
                               progress=False).path)
    assert _texts(s) == [ln for b in blocks for ln in b.split("\n")]


def _write_megatron(prefix, docs: list[list[np.ndarray]]) -> None:
    """A test-local writer following the published .bin/.idx layout (uint16 tokens, code 8)."""
    seqs = [s for d in docs for s in d]
    sizes = np.array([len(s) for s in seqs], "<i4")
    pointers = np.concatenate([[0], np.cumsum(sizes.astype(np.int64) * 2)[:-1]]).astype("<i8")
    doc_idx = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype("<i8")
    with open(f"{prefix}.bin", "wb") as f:
        for s in seqs:
            f.write(np.asarray(s, "<u2").tobytes())
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 8, len(seqs), len(doc_idx)))
        f.write(sizes.tobytes() + pointers.tobytes() + doc_idx.tobytes())


def test_megatron_delegates_to_import(tmp_path, rng, tok):
    docs = [[rng.integers(0, 500, int(rng.integers(0, 90))) for _ in range(int(rng.integers(1, 3)))]
            for _ in range(25)]
    _write_megatron(tmp_path / "m", docs)
    r = ingest(tmp_path / "m.bin", tmp_path / "db", tokenizer=tok, chunk_len=32, progress=False)
    s = ChunkStore.open(r.path)
    assert s.num_docs == 25 and s.chunk_len == 32 and s.tokenizer_fingerprint == fingerprint(tok)
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(s.document(i), np.concatenate(d))


def test_resume_after_a_failed_shard(tmp_path, corpus, monkeypatch):
    src = write_jsonl(tmp_path / "docs.jsonl", corpus.documents)
    opts = {"vocab_size": 400, "shard_bytes": 12000, "num_workers": 1, "progress": False}
    ref = ingest(src, tmp_path / "ref", **opts)
    assert ref.shards >= 5
    monkeypatch.setenv(FAIL_ENV, "3")
    with pytest.raises(RuntimeError, match="injected failure in shard 3"):
        ingest(src, tmp_path / "db", **opts)
    assert not (tmp_path / "db").exists()
    work = tmp_path / ".db.ingest"
    assert sorted(p.name for p in work.glob("shard-*.json")) == [f"shard-0000{i}.json" for i in range(3)]
    assert not list(work.glob(".*tmp*"))  # the failed shard left no partial store
    monkeypatch.delenv(FAIL_ENV)
    seen = []
    r = ingest(src, tmp_path / "db", on_shards=lambda n, k: seen.append((n, k)), **opts)
    assert seen == [(ref.shards, 3)] and r.shards_skipped == 3
    _same_store(tmp_path / "ref", tmp_path / "db")  # same trained tokenizer reused, same tokens


def test_resume_after_a_killed_worker(tmp_path, corpus, tok, monkeypatch):
    src = write_jsonl(tmp_path / "docs.jsonl", corpus.documents)
    opts = {"tokenizer": tok, "shard_bytes": 20000, "num_workers": 2, "progress": False}
    monkeypatch.setenv(FAIL_ENV, "2:kill")
    with pytest.raises(RuntimeError, match="worker process died"):
        ingest(src, tmp_path / "db", **opts)
    monkeypatch.delenv(FAIL_ENV)
    r = ingest(src, tmp_path / "db", **opts)
    assert r.shards_skipped >= 1  # shards 0 and 1 ran before/alongside the killed one
    assert _texts(ChunkStore.open(r.path)) == [d["text"] for d in corpus.documents]


def test_changed_input_invalidates_its_shards(tmp_path, corpus, tok, monkeypatch):
    a = write_jsonl(tmp_path / "a.jsonl", corpus.documents[:60])
    b = write_jsonl(tmp_path / "b.jsonl", corpus.documents[60:])
    opts = {"tokenizer": tok, "shard_bytes": 10**9, "num_workers": 1, "progress": False, "keep_shards": True}
    monkeypatch.setenv(FAIL_ENV, "1")
    with pytest.raises(RuntimeError):
        ingest([a, b], tmp_path / "db", **{**opts, "shard_bytes": 40000})
    monkeypatch.delenv(FAIL_ENV)
    write_jsonl(a, corpus.documents[:59])  # shard 0 was built from the old a.jsonl
    r = ingest([a, b], tmp_path / "db", **{**opts, "shard_bytes": 40000})
    assert r.shards_skipped == 0
    assert _texts(ChunkStore.open(r.path)) == [d["text"] for d in corpus.documents[:59] + corpus.documents[60:]]


def test_bad_input_errors(tmp_path, tok):
    kw = {"tokenizer": tok, "num_workers": 1, "progress": False}
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        ingest(tmp_path / "missing.jsonl", tmp_path / "db", **kw)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:4: invalid JSON"):
        ingest(bad, tmp_path / "db", **kw)
    bad.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no field 'text' \(fields: body\)"):
        ingest(bad, tmp_path / "db", **kw)
    bad.write_text('{"text": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'text' is int"):
        ingest(bad, tmp_path / "db", **kw)
    bad.write_text('["text"]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: expected a JSON object"):
        ingest(bad, tmp_path / "db", **kw)
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"fine\nnot \xff utf8\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: not valid UTF-8"):
        ingest(txt, tmp_path / "db", text_mode="line", **kw)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no documents"):
        ingest(empty, tmp_path / "db", **kw)
    with pytest.raises(ValueError, match="mixed formats"):
        ingest([empty, txt], tmp_path / "db", **kw)
    with pytest.raises(ValueError, match="text_mode"):
        ingest(txt, tmp_path / "db", text_mode="words", **kw)
    with pytest.raises(ValueError, match="chunk_len"):
        ingest(txt, tmp_path / "db", chunk_len=0, **kw)
    no_eod = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="end-of-document"):
        ingest(txt, tmp_path / "db", tokenizer=no_eod, num_workers=1, progress=False)
    good = tmp_path / "good.txt"
    good.write_text("hello")
    ingest(good, tmp_path / "out", **kw)
    with pytest.raises(FileExistsError, match="out"):
        ingest(good, tmp_path / "out", **kw)
    r = ingest(good, tmp_path / "out", overwrite=True, **kw)
    assert r.num_docs == 1


def test_worker_error_surfaces_with_its_message(tmp_path, tok):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(50)) + "{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:51: invalid JSON"):
        ingest(bad, tmp_path / "db", tokenizer=tok, shard_bytes=200, num_workers=2, progress=False)


def test_cli(tmp_path, corpus, tok, capsys):
    src = write_jsonl(tmp_path / "docs.jsonl", corpus.documents[:20])
    tok_file = save_tokenizer(tok, tmp_path / "tokenizer.json")
    rc = cli_main(["db", "ingest", str(src), "-o", str(tmp_path / "db"), "--tokenizer", str(tok_file),
                   "--workers", "1", "--chunk-len", "32", "--no-progress"])
    assert rc == 0 and "20 documents" in capsys.readouterr().out
    s = ChunkStore.open(tmp_path / "db")
    assert s.chunk_len == 32 and _texts(s) == [d["text"] for d in corpus.documents[:20]]
    rc = cli_main(["db", "ingest", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "db2")])
    assert rc == 1 and "nope.jsonl" in capsys.readouterr().err


# --- compressed inputs -----------------------------------------------------------------------------
def _compress(src, dst, suffix):
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
    with open(src, "rb") as f, opener(dst, "wb") as g:
        g.write(f.read())
    return dst


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_compressed_jsonl_and_text_read_like_plain(tmp_path, rng, corpus, suffix):
    plain = write_jsonl(tmp_path / "docs.jsonl", corpus.documents[:40])
    comp = _compress(plain, tmp_path / f"docs.jsonl{suffix}", suffix)
    assert sources.detect_format([comp]) == "jsonl"
    shards = sources.plan_shards([comp], "jsonl", "file", 100)  # far smaller than the file: still one piece
    assert len(shards) == 1 and len(shards[0]) == 1 and shards[0][0].end == comp.stat().st_size
    got = list(sources.iter_documents(shards[0][0], "jsonl", field="text"))
    assert [t for t, _ in got] == [d["text"] for d in corpus.documents[:40]]
    assert 0 < sum(n for _, n in got) <= comp.stat().st_size  # compressed bytes: progress matches the plan
    p = tmp_path / "p.txt"
    blocks = _paragraph_file(p, rng)
    cp = _compress(p, tmp_path / f"p.txt{suffix}", suffix)
    assert sources.detect_format([cp]) == "text"
    for mode, want in [("paragraph", blocks), ("line", [ln for b in blocks for ln in b.split("\n")]),
                       ("file", [p.read_text()])]:
        (piece,), = sources.plan_shards([cp], "text", mode, 7)
        assert [t for t, _ in sources.iter_documents(piece, "text", mode)] == want, mode


def test_compressed_ingest_end_to_end_equals_plain(tmp_path, corpus, tok):
    plain = write_jsonl(tmp_path / "a" / "docs.jsonl", corpus.documents)
    (tmp_path / "b").mkdir()
    comp = _compress(plain, tmp_path / "b" / "docs.jsonl.gz", ".gz")
    kw = dict(tokenizer=tok, shard_bytes=5000, num_workers=1, chunk_len=16, progress=False)
    ingest(plain, tmp_path / "db_plain", **kw)
    r = ingest(comp, tmp_path / "db_gz", **kw)
    assert r.num_docs == len(corpus.documents)
    _same_store(tmp_path / "db_plain", tmp_path / "db_gz")


def test_compressed_bad_input_errors(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text('{"text": "a"}\n{"text": "b"}\n' * 50)
    bad = _compress(good, tmp_path / "bad.jsonl.gz", ".gz")
    bad.write_bytes(bad.read_bytes()[:-30])  # truncated stream
    (piece,), = sources.plan_shards([bad], "jsonl", "file", 10**6)
    with pytest.raises(ValueError, match="bad.jsonl.gz: corrupt or truncated .gz"):
        list(sources.iter_documents(piece, "jsonl"))
    (tmp_path / "x.txt").write_text('{"text": "a"}\n{"text": \n')
    broken = _compress(tmp_path / "x.txt", tmp_path / "x.jsonl.xz", ".xz")
    (piece,), = sources.plan_shards([broken], "jsonl", "file", 10**6)
    with pytest.raises(ValueError, match=r"x.jsonl.xz:2: invalid JSON"):
        list(sources.iter_documents(piece, "jsonl"))
    zst = tmp_path / "d.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(ValueError, match=r"d.jsonl.zst: .zst compressed input is not supported"):
        sources.detect_format([zst])
    with pytest.raises(ValueError, match="cannot be compressed"):
        sources.detect_format([tmp_path / "m.bin.gz"], "megatron")
