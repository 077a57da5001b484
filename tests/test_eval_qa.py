"""Zero-shot QA end to end on tiny random models (GPT + Retro.from_gpt, tiny BPE), file formats, modes."""

from __future__ import annotations

import json

import pytest
import torch
from _eval_fixtures import CHUNK, corpus, tiny_models_for, tokenizer
from tokenizers import Tokenizer

from pyretro.data.chat import ChatTemplate
from pyretro.errors import MismatchError
from pyretro.eval import (
    QAExample,
    evaluate_qa,
    evaluate_qa_modes,
    load_qa_jsonl,
    qa_examples_from_records,
    select_passages,
)
from pyretro.eval import qa as qa_mod
from pyretro.model.generate import generate


@pytest.fixture(scope="module")
def setup():
    c = corpus()
    tok = tokenizer(c)
    docs = {d["id"]: d["text"] for d in c.documents}
    recs = [q for q in c.qa if q["split"] == "heldout"][:4] + [q for q in c.qa if q["split"] == "train"][:2]
    # the start of one database document as context keeps prompts short
    exs = [QAExample(e.id, e.question, e.answers, [e.context[0][:300]]) for e in qa_examples_from_records(recs, docs)]
    gpt, retro = tiny_models_for(tok)
    return tok, exs, gpt, retro


def copying_generate(tok, answers_by_question, calls, wrong=()):
    """A stand-in for generate: answers each prompt's question with its reference, upper-cased with
    punctuation (EM must still be 1), or a wrong answer for questions in ``wrong``."""
    def fn(model, prompts, **kw):
        calls.append(kw)
        out = []
        for p in prompts:
            text = tok.decode(list(p), skip_special_tokens=False)
            q = text.split("\n")[-2]  # ...\n{question}\n<|assistant|>
            ans = "Nothing at all" if q in wrong else f"The {answers_by_question[q].upper()}!"
            out.append(tok.encode(ans, add_special_tokens=False).ids)
        return out
    return fn


def test_scores_come_from_the_metric_functions(setup):
    tok, exs, gpt, retro = setup
    answers = {e.question: e.answers[0] for e in exs}
    calls: list[dict] = []
    wrong = {exs[0].question, exs[1].question}
    res = evaluate_qa_modes({"gpt": gpt, "retro": retro}, tok, exs,
                            generate_fn=copying_generate(tok, answers, calls, wrong), progress=False)
    assert list(res) == ["gpt", "retro", "retro-decoder"]
    n = len(exs)
    for r in res.values():
        assert r.n == n and r.em == pytest.approx(100 * (n - 2) / n) and r.f1 == pytest.approx(r.em)
        assert [p["em"] for p in r.predictions] == [0.0, 0.0] + [1.0] * (n - 2)
    # what each mode asks of generate: greedy, stop at eod, left-pad id; retro gets [B, K, r] neighbours
    t = ChatTemplate(tok)
    gpt_kw, retro_kw, dec_kw = calls[0], calls[len(calls) // 3], calls[-1]
    for kw in (gpt_kw, retro_kw, dec_kw):
        assert kw["stop_tokens"][0] == t.eod_id and kw["pad_id"] == t.pad_id and kw["max_new_tokens"] == 32
        assert tok.token_to_id("<|user|>") in kw["stop_tokens"]  # a new turn also ends the answer
    assert "neighbors" not in gpt_kw and "retrieval" not in gpt_kw
    nb, nm = retro_kw["neighbors"], retro_kw["neighbor_mask"]
    assert nb.dim() == 3 and nb.shape[2] == retro.retro.r and torch.equal(nm, nb >= 0) and nm.any()
    assert dec_kw["retrieval"] is False and "neighbors" not in dec_kw


def test_real_generation_all_modes_structure_determinism_and_eod(setup):
    tok, exs, gpt, retro = setup
    seen = []

    def recording(model, prompts, **kw):
        out = generate(model, prompts, **kw)
        seen.append((kw, out))
        return out
    kw = dict(max_new_tokens=6, batch_size=3, progress=False)
    exs = exs[:4]
    a = evaluate_qa_modes({"gpt": gpt, "retro": retro}, tok, exs, generate_fn=recording, **kw)
    b = {"retro": evaluate_qa(retro, tok, exs, **kw)}
    eod = ChatTemplate(tok).eod_id
    for mode in ("gpt", "retro", "retro-decoder"):
        r = a[mode]
        assert r.mode == mode and r.n == len(exs) and 0 <= r.em <= 100 and 0 <= r.f1 <= 100
        assert set(r.predictions[0]) == {"id", "question", "prediction", "answers", "em", "f1"}
        assert [p["id"] for p in r.predictions] == [e.id for e in exs]  # input order despite length sorting
        json.dumps(r.to_dict())
    assert [p["prediction"] for p in a["retro"].predictions] == [p["prediction"] for p in b["retro"].predictions]
    assert all(len(o) <= 6 and eod not in o for _, outs in seen for o in outs)
    # the decoder alone is the GPT it was fitted from: same answers; Retro with neighbours differs
    assert [p["prediction"] for p in a["gpt"].predictions] == [p["prediction"] for p in a["retro-decoder"].predictions]
    assert a["retro"].settings["gate"] == 1.0


def test_generation_stops_at_eod(setup):
    tok, exs, _, _ = setup
    from _eval_fixtures import tiny_models_for as make
    gpt, _ = make(tok, lm_head_bias=True)
    eod = ChatTemplate(tok).eod_id
    with torch.no_grad():
        gpt.lm_head.bias[eod] = 1e4  # the model always ends at once
    res = evaluate_qa(gpt, tok, exs[:2], max_new_tokens=5, progress=False)
    assert [p["prediction"] for p in res.predictions] == ["", ""] and res.em == 0.0


def test_generation_stops_when_the_model_opens_a_new_turn(setup):
    """A model that starts a "<|user|>" turn instead of emitting eod: the hallucinated turn is not the answer."""
    tok, exs, gpt, _ = setup
    user = tok.token_to_id("<|user|>")
    assert user is not None
    stream = tok.encode("Paris", add_special_tokens=False).ids + [user] + tok.encode("and more", add_special_tokens=False).ids

    def fixed_model(model, prompts, *, stop_tokens=(), **kw):  # emits `stream`, stops like generate does
        cut = next((i for i, t in enumerate(stream) if t in set(stop_tokens)), len(stream))
        return [stream[:cut] for _ in prompts]

    ex = QAExample("x", exs[0].question, ["Paris"], exs[0].context)
    res = evaluate_qa(gpt, tok, [ex], generate_fn=fixed_model, progress=False)
    assert res.predictions[0]["prediction"] == "Paris" and res.em == 100.0


def test_retro_retrieve_mode_re_retrieves_every_chunk(setup):
    tok, exs, _, retro = setup
    chunks_seen = []

    def retriever(chunk_tokens):
        chunks_seen.append(chunk_tokens.shape)
        b = chunk_tokens.shape[0]
        return torch.randint(6, 300, (b, 2, retro.retro.r), generator=torch.Generator().manual_seed(b))
    res = evaluate_qa(retro, tok, exs[:2], mode="retro-retrieve", retriever=retriever, max_new_tokens=CHUNK + 2,
                      progress=False)
    assert res.mode == "retro-retrieve" and res.settings["num_neighbors"] == 2
    assert chunks_seen and all(s[1] == CHUNK for s in chunks_seen)
    with pytest.raises(ValueError, match="needs a retriever"):
        evaluate_qa(retro, tok, exs[:1], mode="retro-retrieve", progress=False)


def test_gate_zero_model_is_evaluated_with_gate_one_and_restored(setup):
    tok, exs, _, retro = setup
    retro.set_gate(0.0)
    try:
        res = evaluate_qa(retro, tok, exs[:1], max_new_tokens=2, progress=False)
        assert res.settings["gate"] == 1.0 and float(retro.gate) == 0.0
        res0 = evaluate_qa(retro, tok, exs[:1], max_new_tokens=2, retro_gate=0.0, progress=False)
        assert res0.settings["gate"] == 0.0
    finally:
        retro.set_gate(1.0)


def test_long_prompts_drop_and_cut_passages(setup):
    tok, exs, _, _ = setup
    from _eval_fixtures import tiny_models_for as make
    gpt, _ = make(tok, max_seq_len=96)
    ex = QAExample("x", exs[0].question, exs[0].answers, [exs[0].context[0]] * 3)
    res = evaluate_qa(gpt, tok, [ex], max_new_tokens=4, progress=False)
    assert res.settings["truncated_prompts"] == 1 and res.n == 1
    short, _ = make(tok, max_seq_len=8)
    with pytest.raises(ValueError, match="without context"):
        evaluate_qa(short, tok, [ex], max_new_tokens=4, progress=False)


def test_mode_and_vocab_errors(setup):
    tok, exs, gpt, retro = setup
    with pytest.raises(TypeError, match="RetroModel"):
        evaluate_qa(gpt, tok, exs, mode="retro", progress=False)
    with pytest.raises(ValueError, match="mode"):
        evaluate_qa(gpt, tok, exs, mode="bert", progress=False)
    with pytest.raises(ValueError, match="needs a GPT"):
        evaluate_qa_modes({"retro": retro}, tok, exs, modes=["gpt"], progress=False)
    from _eval_fixtures import tiny_models
    small, _ = tiny_models(50)
    with pytest.raises(MismatchError, match="vocab_size"):
        evaluate_qa(small, tok, exs, progress=False)


def test_file_formats(tmp_path):
    lines = [
        {"id": "a", "question": "Q1?", "answers": ["x", "y"], "context": ["p1", "p2"]},
        {"question": "Q2?", "answer": "z", "context": "one passage"},  # SQuAD-like, single string
        {"id": "c", "question": "Q3?", "answers": {"text": ["s1", "s2"], "answer_start": [0, 4]}},  # HF SQuAD
        {"id": "d", "question": "Q4?", "answer": {"aliases": ["t1", "t2"], "value": "t1"}},  # TriviaQA
        {"id": "e", "question": "Q5?", "answers": [1990], "ctxs": [{"title": "T", "text": "body"}]},  # DPR / NQ
        {"id": "f", "question": "Q6?", "answers": ["w"], "context_ids": ["d1"]},
        {"id": "g", "question": "Q7?", "answers": ["v"], "document": "long text"},
    ]
    p = tmp_path / "qa.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "d1", "text": "doc one"}) + "\n")
    exs = load_qa_jsonl(p, documents=docs)
    assert [e.id for e in exs] == ["a", "1", "c", "d", "e", "f", "g"]
    assert exs[0].answers == ["x", "y"] and exs[0].context == ["p1", "p2"]
    assert exs[1].answers == ["z"] and exs[1].context == ["one passage"]
    assert exs[2].answers == ["s1", "s2"] and exs[3].answers == ["t1", "t2"]
    assert exs[4].answers == ["1990"] and exs[4].context == ["T: body"]
    assert exs[5].context == ["doc one"] and exs[6].document == "long text" and exs[6].context == []
    with pytest.raises(ValueError, match="context_ids.* need the documents"):
        load_qa_jsonl(p)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(lines[0]).encode())
    assert load_qa_jsonl(bom)[0].id == "a"


@pytest.mark.parametrize("content, msg", [
    ('{"question": "q", "answers": ["a"]}\n{"question": \n', r"qa.jsonl:2: invalid JSON"),
    ('{"question": "q", "answers": []}\n', r"qa.jsonl:1: no reference answers"),
    ('{"answers": ["a"]}\n', r"qa.jsonl:1: missing or empty 'question'"),
    ('[1, 2]\n', r"qa.jsonl:1: expected a JSON object"),
    ('\n\n', "holds no records"),
])
def test_bad_files_name_the_line(tmp_path, content, msg):
    p = tmp_path / "qa.jsonl"
    p.write_text(content)
    with pytest.raises(ValueError, match=msg):
        load_qa_jsonl(p)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_qa_jsonl(tmp_path / "missing.jsonl")


def test_passages_from_a_long_document_are_searched_by_the_question():
    filler = " ".join(f"word{i}" for i in range(300))
    doc = f"{filler} The capital of Zorbia is Quellton and Zorbia exports copper. {filler}"
    got = select_passages(doc, "What is the capital of Zorbia?", k=2, passage_words=20)
    assert len(got) == 2 and "Quellton" in got[0]
    assert select_passages("short text", "q", k=3) == ["short text"]
    ex = qa_mod.resolve_contexts([QAExample("1", "What is the capital of Zorbia?", ["Quellton"], [], doc)],
                                 max_context=1, passage_words=20)
    assert len(ex[0].context) == 1 and "Quellton" in ex[0].context[0] and ex[0].document is None


def test_retro_retrieve_with_a_real_retriever(setup, tmp_path):
    """A Retriever over a store of the corpus (same tokenizer): every completed chunk queries the index."""
    from _eval_fixtures import store_and_index

    from pyretro.retrieval import Retriever

    tok, exs, _, retro = setup
    paths = store_and_index(tok, corpus(), tmp_path)
    r = Retriever.open(paths["store"], paths["index"])
    calls = []
    inner = r.query_chunks

    def spy(chunks, k=2, exclude_docs=None):
        calls.append((len(chunks), k))
        return inner(chunks, k, exclude_docs)
    r.query_chunks = spy
    res = evaluate_qa(retro, tok, exs[:2], mode="retro-retrieve", retriever=r, num_neighbors=3,
                      max_new_tokens=CHUNK + 1, progress=False)
    assert res.n == 2 and calls and all(k == 3 for _, k in calls)
    from pyretro.eval.generation import retriever_fn
    nb, mask = retriever_fn(r, 3, tok, retro.retro.r)(torch.tensor([tok.encode(exs[0].context[0]).ids[:CHUNK]]))
    assert nb.shape == (1, 3, retro.retro.r) and mask.dtype == torch.bool and mask.any()
    other = Tokenizer.from_str(tok.to_str().replace('"<|context|>"', '"<|ctx|>"'))
    with pytest.raises(MismatchError, match="another tokenizer"):
        retriever_fn(r, 2, other)


def test_closed_book_keeps_passages_out_of_the_prompt_but_in_the_encoder(setup):
    tok, exs, gpt, retro = setup
    seen = []

    def fn(model, prompts, **kw):
        seen.append(([tok.decode(list(p), skip_special_tokens=False) for p in prompts], kw))
        return [[] for _ in prompts]
    res = evaluate_qa(retro, tok, exs[:2], prompt_context=False, generate_fn=fn, progress=False)
    texts, kw = seen[0]
    assert all("<|context|>" not in t for t in texts) and kw["neighbors"].shape[0] == 2
    assert res.label == "retro (closed-book)" and res.settings["prompt_context"] is False
    evaluate_qa(retro, tok, exs[:2], generate_fn=fn, progress=False)
    assert all(t.count("<|context|>") == 1 for t in seen[1][0])
