"""The synthetic-knowledge corpus: determinism, fact consistency, QA support, splits, writers."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from pyretro.data import synthetic
from pyretro.data.synthetic import ATTRIBUTES, generate, iter_documents


@pytest.fixture(scope="module")
def corpus():
    return generate(120, 4, seed=7, heldout_fraction=0.3)


def test_same_seed_same_corpus_other_seed_differs(corpus):
    again = generate(120, 4, seed=7, heldout_fraction=0.3)
    assert again.documents == corpus.documents
    assert again.qa == corpus.qa
    assert again.entities == corpus.entities
    other = generate(120, 4, seed=8, heldout_fraction=0.3)
    assert [d["text"] for d in other.documents] != [d["text"] for d in corpus.documents]


def test_larger_corpus_extends_smaller_and_streaming_matches(corpus):
    small = generate(30, 4, seed=7, heldout_fraction=0.3)
    assert corpus.documents[: len(small.documents)] == small.documents
    assert list(iter_documents(120, 4, seed=7, heldout_fraction=0.3)) == corpus.documents


def _words(text: str, vocab: list[str]) -> set[str]:
    return {w for w in vocab if re.search(rf"\b{re.escape(w)}\b", text)}


def test_every_document_states_exactly_its_entitys_facts(corpus):
    by_entity = {e.id: e for e in corpus.entities}
    for d in corpus.documents:
        e = by_entity[d["entity"]]
        text = d["text"]
        assert e.name in text
        for a in ATTRIBUTES:
            assert e.facts[a] in text, (a, text)
        # no conflicting value of the closed-vocabulary attributes
        assert _words(text, synthetic._COLOURS) == {e.facts["colour"]}
        assert _words(text, synthetic._PETS) == {e.facts["pet"]}
        assert _words(text, synthetic._OCCUPATIONS) == {e.facts["occupation"]}
        assert set(re.findall(r"\b(?:19|20)\d\d\b", text)) == {e.facts["birth_year"]}


def test_documents_of_an_entity_differ_in_wording(corpus):
    groups: dict[str, list[str]] = {}
    for d in corpus.documents:
        groups.setdefault(d["entity"], []).append(d["text"])
    assert all(len(set(texts)) == len(texts) for texts in groups.values())


def test_facts_are_arbitrary_and_names_unique():
    c = generate(2000, 2, seed=1)
    names = [e.name for e in c.entities]
    assert len(set(names)) == len(names)
    for a, lo in [("birth_city", 150), ("employer", 100), ("colour", 20), ("pet_name", 1000)]:
        assert len({e.facts[a] for e in c.entities}) >= lo, a
    # the same first name does not imply the same facts
    by_first: dict[str, set[str]] = {}
    for e in c.entities:
        by_first.setdefault(e.first, set()).add(e.facts["birth_city"])
    assert any(len(v) > 1 for v in by_first.values())


def test_qa_answers_are_in_every_context_document(corpus):
    docs = {d["id"]: d for d in corpus.documents}
    ents = {e.id: e for e in corpus.entities}
    assert len(corpus.qa) == len(corpus.entities) * len(ATTRIBUTES)
    for q in corpus.qa:
        e = ents[q["entity"]]
        assert e.name in q["question"]
        assert q["answers"] == [e.facts[q["attribute"]]]
        assert q["context_ids"]
        for cid in q["context_ids"]:
            d = docs[cid]
            assert d["entity"] == e.id and d["split"] != "eval"
            assert q["answers"][0] in d["text"]
        assert q["split"] == ("heldout" if e.heldout else "train")


def test_splits(corpus):
    ents = {e.id: e for e in corpus.entities}
    counts = Counter(e.heldout for e in corpus.entities)
    assert 0 < counts[True] < len(corpus.entities)
    train, db, ev = corpus.train_documents, corpus.database_documents, corpus.eval_documents
    assert {d["id"] for d in train} <= {d["id"] for d in db}
    assert not {d["id"] for d in ev} & {d["id"] for d in db}
    assert all(not ents[d["entity"]].heldout for d in train)
    held = [e for e in corpus.entities if e.heldout]
    for e in held:
        mine = [d for d in corpus.documents if d["entity"] == e.id]
        assert Counter(d["split"] for d in mine) == {"eval": 1, "retrieval": 3}
    # every eval document's facts are retrievable: its entity has database documents
    db_entities = {d["entity"] for d in db}
    assert all(d["entity"] in db_entities for d in ev)
    assert len(corpus.qa_split(heldout=True)) == len(held) * len(ATTRIBUTES)
    with pytest.raises(ValueError, match="split"):
        corpus.split("test")


def test_write_jsonl_roundtrip(tmp_path, corpus):
    paths = corpus.write(tmp_path / "c")
    rows = [json.loads(line) for line in paths["documents"].read_text().splitlines()]
    assert rows == corpus.documents
    assert len(paths["eval"].read_text().splitlines()) == len(corpus.eval_documents)
    qa = [json.loads(line) for line in paths["qa"].read_text().splitlines()]
    assert qa == corpus.qa
    assert not list((tmp_path / "c").glob(".*tmp*"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_entities": 0}, "num_entities"),
        ({"docs_per_entity": 1}, "docs_per_entity"),
        ({"eval_docs_per_entity": 4}, "eval_docs_per_entity"),
        ({"heldout_fraction": 1.5}, "heldout_fraction"),
        ({"shared_lead": -1}, "shared_lead"),
        ({"shared_lead": 10}, "shared_lead"),
        ({"reading_docs": -1}, "reading_docs"),
        ({"reading_questions": 0}, "reading_questions"),
        ({"reading_questions": 10}, "reading_questions"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"num_entities": 3, "docs_per_entity": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        generate(**args)


def test_shared_lead_opens_every_document_of_an_entity_and_the_rest_varies():
    lead = generate(40, 4, seed=3, shared_lead=4)
    stock = generate(40, 4, seed=3)
    assert lead.params["shared_lead"] == 4 and stock.params["shared_lead"] == 0
    assert [e.facts for e in lead.entities] == [e.facts for e in stock.entities]  # same facts, other wording
    by_entity: dict[str, list[str]] = {}
    for d in lead.documents:
        by_entity.setdefault(d["entity"], []).append(d["text"])
    ents = {e.id: e for e in lead.entities}
    for eid, texts in by_entity.items():
        sents = [re.split(r"(?<=\.) ", t) for t in texts]
        n = len(sents[0]) - 1
        common = next(i for i in range(n) if len({tuple(s[: i + 1]) for s in sents}) > 1)
        assert common >= 5, texts  # the intro and >= 4 fact sentences, identical in every document
        assert len(set(texts)) == len(texts)  # the remainder still differs between documents
        for t in texts:  # and every document still states every fact
            assert all(ents[eid].facts[a] in t for a in ATTRIBUTES)
    # stock documents of one entity rarely open alike beyond the intro
    openings = Counter(tuple(re.split(r"(?<=\.) ", d["text"])[1:3]) for d in stock.documents)
    assert max(openings.values()) < 4


def test_reading_documents_answer_questions_from_their_own_text_for_training_people_only():
    stock = generate(40, 4, seed=5, shared_lead=3)
    rd = generate(40, 4, seed=5, shared_lead=3, reading_docs=2, reading_questions=4)
    assert rd.params["reading_docs"] == 2 and rd.params["reading_questions"] == 4
    reading = [d for d in rd.documents if "-r" in d["id"]]
    # the other documents and all QA records are unchanged (reading documents draw from their own stream)
    assert [d for d in rd.documents if "-r" not in d["id"]] == stock.documents

    def strip(q):
        return {k: v for k, v in q.items() if k != "context_ids"}
    assert [strip(q) for q in rd.qa] == [strip(q) for q in stock.qa]
    for q, q0 in zip(rd.qa, stock.qa, strict=True):  # a training person's context also lists its reading documents
        extra = set(q["context_ids"]) - set(q0["context_ids"])
        assert extra == ({f"{q['entity']}-r0", f"{q['entity']}-r1"} if q["split"] == "train" else set())
    ents = {e.id: e for e in rd.entities}
    train = [e for e in rd.entities if not e.heldout]
    assert len(reading) == 2 * len(train) and {d["entity"] for d in reading} == {e.id for e in train}
    assert all(d["split"] == "train" for d in reading)
    for d in reading:
        e = ents[d["entity"]]
        body, *qa = d["text"].split("\nQuestion: ")
        assert len(qa) == 4 and all(e.facts[a] in body for a in ATTRIBUTES)  # the answers precede the questions
        asked = []
        for block in qa:
            q, ans = block.split("\nAnswer: ")
            attr = next(a for a, qs in synthetic._QUESTIONS.items() if q in [t.format(F=e.name) for t in qs])
            assert ans == e.facts[attr]
            asked.append(attr)
        assert len(set(asked)) == 4  # distinct questions
    assert not any("Question:" in d["text"] for d in rd.documents if ents[d["entity"]].heldout)
    # two reading documents of one person ask different questions or word the text differently
    by = Counter(d["entity"] for d in reading)
    assert set(by.values()) == {2}
    pairs = {}
    for d in reading:
        pairs.setdefault(d["entity"], []).append(d["text"])
    assert all(a != b for a, b in pairs.values())
    kw = dict(seed=5, shared_lead=3, reading_docs=2, reading_questions=4)
    assert list(iter_documents(40, 4, **kw)) == rd.documents  # streaming yields the same documents
