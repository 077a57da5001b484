"""Instruction-tuning data: answer-only loss masks, packing, truncation, passage neighbours, JSONL errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pyretro.data import synthetic
from pyretro.data.chat import ChatTemplate, Conversation
from pyretro.data.tokenizer import train_bpe
from pyretro.errors import ConfigError, MismatchError
from pyretro.train import (
    SFTDataset,
    encode_conversation,
    load_conversations,
    make_loader,
    pack_lengths,
    passage_neighbors,
)


@pytest.fixture(scope="module")
def corpus():
    return synthetic.generate(12, 2, seed=0)


@pytest.fixture(scope="module")
def tmpl(corpus):
    return ChatTemplate(train_bpe([d["text"] for d in corpus.documents], vocab_size=700))


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _qa(corpus, n, with_context=True):
    docs = {d["id"]: d["text"] for d in corpus.documents}
    out = []
    for q in corpus.qa[:n]:
        rec = {"question": q["question"], "answers": q["answers"]}
        if with_context:
            rec["context"] = [docs[i] for i in q["context_ids"][:2]]
        out.append(rec)
    return out


def _answer_ids(tmpl, answer):  # an answer is rendered after one space (pyretro.data.chat)
    return tmpl.tokenizer.encode(" " + answer, add_special_tokens=False).ids + [tmpl.eod_id]


def test_mask_covers_exactly_the_answer(corpus, tmpl, tmp_path):
    recs = _qa(corpus, 3) + [{
        "system": "Answer briefly.", "context": ["Alpha is a city.", "Beta is a river."],
        "messages": [{"role": "user", "content": "Where is Alpha?"}, {"role": "assistant", "content": "north"},
                     {"role": "user", "content": "And Beta?"}, {"role": "assistant", "content": "It flows east."}],
    }]
    ds = SFTDataset(_write(tmp_path / "a.jsonl", recs), tmpl, seq_len=512, pack=False)
    assert len(ds) == 4 and ds.num_truncated == 0
    answers = [r["answers"][0] for r in recs[:3]] + ["It flows east."]
    for i, ans in enumerate(answers):
        item = ds[i]
        tok, loss = item["tokens"], item["loss_mask"]
        assert tok.shape == (512,) and loss.dtype == torch.bool
        assert tok[loss].tolist() == _answer_ids(tmpl, ans)
        ids, mask = tmpl.encode(Conversation.from_dict(recs[i]))
        n = len(ids)
        assert tok[:n].tolist() == ids.tolist() and loss[:n].tolist() == mask.tolist()
        assert (tok[n:] == tmpl.pad_id).all() and not loss[n:].any()
    # all_turns counts the earlier answer too
    both = SFTDataset(recs[3:], tmpl, seq_len=512, all_turns=True)
    assert both[0]["tokens"][both[0]["loss_mask"]].tolist() == _answer_ids(tmpl, "north") + _answer_ids(
        tmpl, "It flows east.")


def test_packing(corpus, tmpl, tmp_path):
    path = _write(tmp_path / "qa.jsonl", _qa(corpus, 60, with_context=False))
    ds = SFTDataset(path, tmpl, seq_len=96)
    assert ds.num_conversations == 60 and len(ds) < 60 and 0.5 < ds.fill <= 1.0
    seen = []
    batch = ds.get_batch(range(len(ds)))
    for i in range(len(ds)):
        parts = [ds.conversation(j) for j in ds.row_items(i)]
        ids = np.concatenate([p[0] for p in parts])
        mask = np.concatenate([p[1] for p in parts])
        assert len(ids) <= 96
        np.testing.assert_array_equal(batch["tokens"][i, :len(ids)].numpy(), ids)
        np.testing.assert_array_equal(batch["loss_mask"][i, :len(ids)].numpy(), mask)
        assert (batch["tokens"][i, len(ids):] == tmpl.pad_id).all() and not batch["loss_mask"][i, len(ids):].any()
        seen += ds.row_items(i).tolist()
    assert sorted(seen) == list(range(60))
    again = SFTDataset(path, tmpl, seq_len=96)
    assert torch.equal(again.get_batch(range(len(again)))["tokens"], batch["tokens"])
    for j in range(60):  # each conversation is its template encoding (nothing was cut)
        ids, mask = tmpl.encode(Conversation.from_dict(_qa(corpus, 60, False)[j]))
        np.testing.assert_array_equal(ds.conversation(j)[0], ids)


def test_pack_lengths_properties(rng):
    for _ in range(50):
        seq = int(rng.integers(4, 200))
        lengths = rng.integers(1, seq + 1, size=int(rng.integers(1, 120))).tolist()
        rows = pack_lengths(lengths, seq)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        sums = [sum(lengths[i] for i in r) for r in rows]
        assert max(sums) <= seq and len(rows) >= -(-sum(lengths) // seq)
        assert sum(s <= seq / 2 for s in sums) <= 1  # any-fit: two half-empty rows would have been merged
        assert rows == pack_lengths(lengths, seq)
    with pytest.raises(ValueError, match="outside"):
        pack_lengths([3, 11], 10)


def test_truncation_cuts_context_then_prompt_never_the_answer(corpus, tmpl, tmp_path):
    passages = [d["text"] for d in corpus.documents[:3]]
    conv = Conversation.from_dict({"question": "Who is the baker?", "answer": "Kira Mosl", "context": passages})
    full, _ = tmpl.encode(conv)
    bare, _ = tmpl.encode(Conversation.from_dict({"question": "Who is the baker?", "answer": "Kira Mosl"}))
    for seq_len in (len(full) - 5, len(bare) + 40):
        ids, mask = encode_conversation(tmpl, conv, seq_len)
        assert len(ids) <= seq_len and len(ids) >= seq_len - 3  # the passage cut stops just short of seq_len
        assert ids[mask].tolist() == _answer_ids(tmpl, "Kira Mosl")
        text = tmpl.tokenizer.decode(ids.tolist(), skip_special_tokens=False)
        assert "Who is the baker?" in text and text.startswith("<|user|><|context|>")
        assert passages[0][:20] in text  # the first passage is kept longest
    # no room for any passage token: all passages dropped, the rest intact
    np.testing.assert_array_equal(encode_conversation(tmpl, conv, len(bare) + 1)[0], bare)
    # no context left to cut: the left of the prompt goes, the tail is the full encoding's tail
    conv2 = Conversation.from_dict({"question": "word " * 80 + "Who?", "answer": "Kira"})
    full2, mask2 = tmpl.encode(conv2)
    ids, mask = encode_conversation(tmpl, conv2, 40)
    np.testing.assert_array_equal(ids, full2[-40:])
    np.testing.assert_array_equal(mask, mask2[-40:])
    # through the dataset: counted, and the answer alone not fitting names the file and line
    path = _write(tmp_path / "t.jsonl", [{"question": "Who is the baker?", "answer": "Kira Mosl", "context": passages},
                                         {"question": "Q?", "answer": "a " * 200}])
    with pytest.raises(ValueError, match=r"t\.jsonl:2: the answer \(\d+ tokens with its assistant marker\) does not fit"):
        SFTDataset(path, tmpl, seq_len=len(bare) + 5)
    ok = SFTDataset(_write(tmp_path / "t1.jsonl", [json.loads(path.read_text().splitlines()[0])]), tmpl,
                    seq_len=len(bare) + 5)
    assert ok.num_truncated == 1 and ok[0]["tokens"][ok[0]["loss_mask"]].tolist() == _answer_ids(tmpl, "Kira Mosl")


def test_jsonl_errors_name_file_and_line(tmpl, tmp_path):
    good = {"question": "Q?", "answer": "A"}
    cases = [
        ('{"question": "Q?", "answer": ', r"bad\.jsonl:3: invalid JSON"),
        ("[1, 2]", r"bad\.jsonl:3: expected a JSON object"),
        ({"messages": []}, r"bad\.jsonl:3: conversation: expected a non-empty 'messages'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"bad\.jsonl:3: conversation: message 0"),
        ({"messages": [{"role": "user", "content": "x"}]}, r"bad\.jsonl:3: conversation: the last turn must be"),
    ]
    for bad, pattern in cases:
        path = _write(tmp_path / "bad.jsonl", [good, "", bad])  # line 2 is blank (skipped, still counted)
        with pytest.raises(ValueError, match=pattern):
            SFTDataset(path, tmpl, seq_len=64)
    _write(tmp_path / "bad.jsonl", [good, "", {"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: conversation: message 0"):
        load_conversations(tmp_path / "bad.jsonl")
    assert len(load_conversations(_write(tmp_path / "ok.jsonl", [good, good]))) == 2
    with pytest.raises(ConfigError, match="no conversations"):
        SFTDataset(_write(tmp_path / "empty.jsonl", [""]), tmpl, seq_len=64)
    with pytest.raises(FileNotFoundError):
        SFTDataset(tmp_path / "missing.jsonl", tmpl, seq_len=64)
    with pytest.raises(ValueError, match="record 0: expected a conversation dict"):
        SFTDataset([3], tmpl, seq_len=64)


def test_retrieval_neighbors_from_context_passages(corpus, tmpl):
    recs = _qa(corpus, 4)
    recs[1]["context"] = recs[1]["context"][:1]  # one passage: the second neighbour is missing
    ds = SFTDataset(recs, tmpl, seq_len=256, retrieval_neighbors=True, k=2, r=24, chunk_len=32)
    assert len(ds) == 4 and not ds.pack  # one conversation per row
    b = ds.get_batch([0, 1])
    assert b["neighbors"].shape == (2, 8, 2, 24) and b["neighbor_mask"].shape == (2, 8, 2, 24)
    for row, rec in enumerate(recs[:2]):
        ref, ref_mask = passage_neighbors(tmpl, rec["context"], 2, 24, tmpl.pad_id)
        for u in range(8):  # the same passages for every chunk
            np.testing.assert_array_equal(b["neighbors"][row, u].numpy(), ref)
            np.testing.assert_array_equal(b["neighbor_mask"][row, u].numpy(), ref_mask)
        first = tmpl.tokenizer.encode(rec["context"][0], add_special_tokens=False).ids
        assert b["neighbors"][row, 0, 0].tolist() == first[:24] and ref_mask[0].all()
    assert not b["neighbor_mask"][1, :, 1].any() and (b["neighbors"][1, :, 1] == tmpl.pad_id).all()
    short, m = passage_neighbors(tmpl.tokenizer, ["Kira"], 1, 24)
    n = len(tmpl.tokenizer.encode("Kira", add_special_tokens=False).ids)
    assert m[0, :n].all() and not m[0, n:].any()
    with pytest.raises(ConfigError, match="multiple of chunk_len 64"):
        SFTDataset(recs, tmpl, seq_len=100, retrieval_neighbors=True, chunk_len=64)


def test_loader_over_sft(corpus, tmpl):
    ds = SFTDataset(_qa(corpus, 30), tmpl, seq_len=256)
    ds.check_vocab(700)
    with pytest.raises(MismatchError, match="model's vocab_size 300"):
        ds.check_vocab(300)
    batches = list(make_loader(ds, 2, seed=1, drop_last=False))
    assert sum(len(b["position"]) for b in batches) == len(ds)
    for b in batches:
        ref = ds.get_batch(b["position"].tolist())
        assert torch.equal(b["tokens"], ref["tokens"]) and torch.equal(b["loss_mask"], ref["loss_mask"])


def test_context_ids_resolved_through_documents(corpus, tmpl, tmp_path):
    files = corpus.write(tmp_path / "corpus")
    docs = {d["id"]: d["text"] for d in corpus.documents}
    ds = SFTDataset(files["qa"], tmpl, seq_len=1024, pack=False, documents=files["documents"], max_context=1)
    q = corpus.qa[0]
    conv = Conversation.from_dict({"question": q["question"], "answers": q["answers"],
                                   "context": [docs[q["context_ids"][0]]]})
    ids, _ = tmpl.encode(conv)
    assert ds[0]["tokens"][:len(ids)].tolist() == ids.tolist()
    assert len(load_conversations(files["qa"], documents=docs)[0].context) == len(q["context_ids"])
    with pytest.raises(ValueError, match=r"qa\.jsonl:1: 'context_ids' need the documents"):
        SFTDataset(files["qa"], tmpl, seq_len=1024)
    with pytest.raises(ValueError, match=r"qa\.jsonl:1: context_ids not among the documents"):
        SFTDataset(files["qa"], tmpl, seq_len=1024, documents={"x": "y"})
