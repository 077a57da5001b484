"""Summarization end to end on tiny random models; ROUGE comes from the metric functions."""

from __future__ import annotations

import json

import pytest
from _eval_fixtures import corpus, tiny_models_for, tokenizer

from pyretro.eval import (
    evaluate_summarization,
    evaluate_summarization_modes,
    load_summarization_jsonl,
    rouge_geometric_mean,
    rouge_scores,
)


@pytest.fixture(scope="module")
def setup():
    c = corpus()
    tok = tokenizer(c)
    recs = [{"id": d["id"], "document": d["text"][:240], "summary": d["text"][:60]} for d in c.documents[:3]]
    gpt, retro = tiny_models_for(tok)
    return tok, recs, gpt, retro


def test_copying_generator_scores_100_and_a_partial_one_matches_rouge(tmp_path, setup):
    tok, recs, gpt, retro = setup
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs))
    exs = load_summarization_jsonl(p)
    by_doc = {r["document"]: r["summary"] for r in recs}
    calls = []

    def fn(model, prompts, **kw):
        calls.append(kw)
        out = []
        for pr in prompts:
            text = tok.decode(list(pr), skip_special_tokens=True)
            doc = next(d for d in by_doc if d in text)
            summ = by_doc[doc] if doc != recs[0]["document"] else "unrelated words here"
            out.append(tok.encode(summ, add_special_tokens=False).ids)
        return out
    res = evaluate_summarization_modes({"gpt": gpt, "retro": retro}, tok, exs, generate_fn=fn, progress=False)
    assert list(res) == ["gpt", "retro", "retro-decoder"]
    first = rouge_scores("unrelated words here", recs[0]["summary"])
    for r in res.values():
        assert r.n == 3 and r.predictions[1]["rouge1"] == 1.0 and r.predictions[2]["rougeL"] == 1.0
        want = {k: (first[k] + 2.0) / 3 for k in ("rouge1", "rouge2", "rougeL")}
        assert (r.rouge1, r.rouge2, r.rougeL) == pytest.approx((100 * want["rouge1"], 100 * want["rouge2"],
                                                                 100 * want["rougeL"]))
        assert r.rouge_gm == pytest.approx(100 * rouge_geometric_mean(want))
    assert all(kw["max_new_tokens"] == 256 for kw in calls)
    retro_kw = calls[1]
    assert retro_kw["neighbors"].shape[2] == retro.retro.r and retro_kw["neighbors"].shape[1] <= 5


def test_real_generation_structure(setup):
    tok, recs, gpt, retro = setup
    from pyretro.eval.data import summarization_examples_from_records

    exs = summarization_examples_from_records(recs[:2])
    for model, mode in ((gpt, "gpt"), (retro, "retro"), (retro, "retro-decoder")):
        r = evaluate_summarization(model, tok, exs, mode=mode, max_new_tokens=5, progress=False)
        assert r.mode == mode and r.n == 2 and 0 <= r.rouge_gm <= 100
        assert set(r.predictions[0]) == {"id", "prediction", "summaries", "rouge1", "rouge2", "rougeL"}
        json.dumps(r.to_dict())


@pytest.mark.parametrize("rec, msg", [
    ({"summary": "x"}, "missing or empty 'document'"),
    ({"document": "d"}, "no reference summary"),
])
def test_bad_records(tmp_path, rec, msg):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"document": "ok", "summaries": ["a", "b"]}) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(ValueError, match=f"s.jsonl:2: {msg}"):
        load_summarization_jsonl(p)


def test_field_aliases(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"article": "A long article.", "highlights": "Short."}) + "\n")
    (ex,) = load_summarization_jsonl(p)
    assert ex.document == "A long article." and ex.summaries == ["Short."] and ex.id == "0"
