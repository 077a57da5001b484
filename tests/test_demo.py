"""`pyretro demo`: settings, the corpus variant, resumable stages, and the tiny run end to end."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest

from pyretro.demo import SIZES, make_config
from pyretro.demo.corpus import demo_corpus, practice_people, spell_full_names
from pyretro.demo.stages import StageRunner
from pyretro.errors import ConfigError

STAGES = ["corpus", "ingest", "retrieval", "qa_data", "pretrain_gpt", "continue_gpt", "retrofit_retro", "sft_gpt",
          "sft_retro", "eval_ppl", "eval_qa", "examples"]


def test_sizes_and_overrides():
    assert set(SIZES) == {"tiny", "small", "base"}
    for size in SIZES:
        cfg = make_config(size)
        assert cfg.size == size and cfg.seq_len % cfg.chunk_len == 0
    cfg = make_config("tiny", seed=3, pretrain_steps=7)
    assert (cfg.seed, cfg.pretrain_steps) == (3, 7)
    assert cfg.key() != make_config("tiny").key()
    assert cfg.key("vocab_size") == make_config("tiny").key("vocab_size")
    # an explicit None is a setting too (turns the CCA position bias off), from Python and from `--set`
    from pyretro.cli.demo import _overrides

    assert make_config("tiny").cca_position_bias == 3.0
    assert make_config("tiny", cca_position_bias=None).cca_position_bias is None
    assert make_config("tiny", **_overrides(["cca_position_bias=null"])).cca_position_bias is None
    assert make_config("tiny", **_overrides(["cca_position_bias=1.5"])).cca_position_bias == 1.5


@pytest.mark.parametrize("kwargs, match", [
    ({"size": "huge"}, "size"),
    ({"size": "tiny", "no_such_field": 1}, "no_such_field"),
    ({"size": "tiny", "seq_len": 70}, "multiple of chunk_len"),
    ({"size": "tiny", "k_train": 9}, "k_saved"),
    ({"size": "tiny", "pretrain_steps": 0}, "pretrain_steps"),
    ({"size": "tiny", "shared_lead": 10}, "shared_lead"),
    ({"size": "tiny", "reading_docs": -1}, "reading_docs"),
    ({"size": "tiny", "reading_questions": 10}, "reading_questions"),
    ({"size": "tiny", "retrieval_lr_scale": 0}, "retrieval_lr_scale"),
    ({"size": "tiny", "continue_warmup_steps": -1}, "continue_warmup_steps"),
    ({"size": "tiny", "sft_entities": "all"}, "sft_entities"),
    ({"size": "tiny", "cca_position_bias": "high"}, "cca_position_bias"),
    ({"size": "tiny", "cca_position_bias": float("inf")}, "cca_position_bias"),
    ({"size": "tiny", "practice_people": -1}, "practice_people"),
    ({"size": "tiny", "bursty_steps": 5}, "practice people"),
    ({"size": "tiny", "sft_data": "practice"}, "practice people"),
    ({"size": "tiny", "practice_people": 10, "sft_data": "reading"}, "sft_data"),
    ({"size": "tiny", "practice_people": 10, "bursty_steps": 5, "bursty_seq_len": 1}, "bursty_seq_len"),
    ({"size": "tiny", "practice_seq_len": 0}, "practice_seq_len"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_config(**kwargs)


def test_full_names_keep_facts_and_splits():
    plain = demo_corpus(12, 3, seed=5, heldout_fraction=0.3, full_name_share=0.0)
    full = demo_corpus(12, 3, seed=5, heldout_fraction=0.3, full_name_share=1.0)
    assert [d["id"] for d in plain.documents] == [d["id"] for d in full.documents]
    assert plain.qa == full.qa
    ents = {e.id: e for e in full.entities}
    for p, f in zip(plain.documents, full.documents, strict=True):
        e = ents[f["entity"]]
        assert not re.search(r"\b(he|she|his|her)\b", f["text"], re.IGNORECASE)
        # every first-name mention is followed by the surname
        assert len(re.findall(rf"\b{e.first}\b", f["text"])) == f["text"].count(e.name)
        for value in e.facts.values():  # facts are untouched
            assert (value in p["text"]) == (value in f["text"])
        assert f["text"].count(e.name) >= p["text"].count(e.name)
    with pytest.raises(ValueError, match="share"):
        spell_full_names(plain, 1.5)


def test_qa_files_tune_on_train_or_disjoint_heldout_entities(tmp_path, monkeypatch):
    from pyretro.demo import qa_data

    qa = demo_corpus(40, 2, seed=1, heldout_fraction=0.3, full_name_share=1.0).qa
    split = {q["entity"]: q["split"] for q in qa}
    monkeypatch.setattr(qa_data, "retrieve_documents",
                        lambda retriever, questions, k: [[f"passage about {q}"] for q in questions])

    def entities(path):
        return {json.loads(line)["id"].split("-q-")[0] for line in path.read_text().splitlines()}

    for mode in ("train", "heldout"):
        stats = qa_data.build_qa_files(qa, None, tmp_path / mode, passages=1, r=8, n_eval=1000, seed=0,
                                       sft_entities=mode)
        tune, ev = entities(tmp_path / mode / "sft_train.jsonl"), entities(tmp_path / mode / "qa_eval.jsonl")
        assert stats["sft_entities"] == mode and stats["sft_train"]["entities"] == len(tune)
        assert tune and ev and not tune & ev
        assert {split[e] for e in ev} == {"heldout"}
        assert {split[e] for e in tune} == {"train" if mode == "train" else "heldout"}
        if mode == "heldout":  # the held-out people split in two halves
            assert tune | ev == {e for e, s in split.items() if s == "heldout"}
            assert abs(len(tune) - len(ev)) <= 1
    with pytest.raises(ValueError, match="sft_entities"):
        qa_data.build_qa_files(qa, None, tmp_path / "x", passages=1, r=8, n_eval=5, seed=0, sft_entities="all")
    one = [q for q in qa if q["split"] == "train" or q["entity"] == next(e for e, s in split.items() if s == "heldout")]
    with pytest.raises(ValueError, match="held-out people in two, but there are 1"):
        qa_data.build_qa_files(one, None, tmp_path / "y", passages=1, r=8, n_eval=5, seed=0, sft_entities="heldout")


def test_practice_people_pairs_and_conversations():
    main = demo_corpus(20, 3, seed=1, heldout_fraction=0.2, full_name_share=1.0, shared_lead=7)
    avoid = {e.name for e in main.entities}
    pairs, convs = practice_people(30, 77, shared_lead=7, avoid_names=avoid)
    assert len(pairs) == len(convs) == 30
    assert [p["entity"] for p in pairs] == [c["entity"] for c in convs]
    c = demo_corpus(30, 3, seed=77, heldout_fraction=0.0, full_name_share=1.0, shared_lead=7)
    ents = {e.id: e for e in c.entities}
    for p, conv in zip(pairs, convs, strict=True):
        e = ents[p["entity"].removeprefix("practice-")]
        first, second = p["text"].split("\n\n")
        # both documents are about the person and open with the same canonical lead: the second is readable
        # from the first
        assert e.name in first and e.name in second and first != second
        assert first.split(". ")[1:4] == second.split(". ")[1:4]
        msgs = conv["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 9
        assert sorted(m["content"] for m in msgs[1::2]) == sorted(e.facts.values())
        assert all(m["content"] in conv["context"][0] for m in msgs[1::2])  # the passage answers every question
        assert conv["context"][0] not in (first, second)
    assert practice_people(30, 77, 7, avoid) == (pairs, convs)  # seeded
    clash = {ents[pairs[0]["entity"].removeprefix("practice-")].name}
    kept, _ = practice_people(30, 77, 7, clash)
    assert len(kept) == 29 and pairs[0] not in kept


def test_name_reuse_separates_a_copier_from_a_model_that_cannot_copy(tmp_path, monkeypatch):
    import torch

    from pyretro.data.tokenizer import save_tokenizer, train_bpe
    from pyretro.demo import evaluation

    c = demo_corpus(30, 3, seed=2, heldout_fraction=0.3, full_name_share=1.0, shared_lead=7)
    c.write(tmp_path / "corpus")
    vocab = 400
    save_tokenizer(train_bpe((d["text"] for d in c.documents), vocab_size=vocab), tmp_path / "tok.json")

    class Uniform(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape, vocab)

    class Copier(torch.nn.Module):  # predicts what followed the last earlier occurrence of the current token
        def forward(self, x):
            out = torch.zeros(*x.shape, vocab)
            seq = x[0].tolist()
            for t in range(len(seq)):
                prev = [s for s in range(t) if seq[s] == seq[t]]
                if prev:
                    out[0, t, seq[prev[-1] + 1]] = 5.0
            return out

    fakes = {"uniform": Uniform(), "copier": Copier()}
    monkeypatch.setattr(evaluation, "load", lambda path, device="cpu": fakes[str(path)])
    r = evaluation.name_reuse({k: k for k in fakes}, tmp_path / "corpus", tmp_path / "tok.json", max_tokens=128)
    u, cp = r["uniform"], r["copier"]
    assert u["docs"] == cp["docs"] == len(c.split("eval")) and u["first_tokens"] > 0 and u["later_tokens"] > 0
    assert u["first_nll"] == pytest.approx(np.log(vocab)) and u["later_nll"] == pytest.approx(np.log(vocab))
    # later mentions copied from the first (a mention's first token follows a template word: not copyable)
    assert cp["later_nll"] < 0.4 * cp["first_nll"]
    assert cp["first_nll"] > 0.9 * np.log(vocab)


def test_partial_share_is_seeded():
    a = demo_corpus(8, 2, seed=1, heldout_fraction=0.2, full_name_share=0.5)
    b = demo_corpus(8, 2, seed=1, heldout_fraction=0.2, full_name_share=0.5)
    plain = demo_corpus(8, 2, seed=1, heldout_fraction=0.2, full_name_share=0.0)
    full = demo_corpus(8, 2, seed=1, heldout_fraction=0.2, full_name_share=1.0)
    assert [d["text"] for d in a.documents] == [d["text"] for d in b.documents]
    n = lambda c: sum(d["text"].count(ents.name) for d in c.documents for ents in c.entities  # noqa: E731
                      if ents.id == d["entity"])
    assert n(plain) < n(a) < n(full)


def test_reading_documents_leave_the_other_documents_unchanged_at_a_partial_share():
    base = demo_corpus(40, 4, seed=0, heldout_fraction=0.2, full_name_share=0.5, shared_lead=3)
    rd = demo_corpus(40, 4, seed=0, heldout_fraction=0.2, full_name_share=0.5, shared_lead=3, reading_docs=1)
    assert [d for d in rd.documents if "-r" not in d["id"]] == base.documents
    assert len(rd.documents) > len(base.documents)


def test_stage_runner_skips_and_reruns(tmp_path):
    calls = []
    keys = {"a": "k1", "b": "k2"}

    def run_all(progress=False):
        st = StageRunner(tmp_path, lambda name: keys[name], progress=progress)
        ra = st.run("a", "stage a", lambda: calls.append("a") or {"x": 1})
        rb = st.run("b", "stage b", lambda: calls.append("b") or {"y": 2})
        return st, ra, rb

    st, ra, rb = run_all()
    assert (ra, rb, calls, st.ran) == ({"x": 1}, {"y": 2}, ["a", "b"], ["a", "b"])
    st, ra, rb = run_all()
    assert (ra, rb, calls, st.skipped) == ({"x": 1}, {"y": 2}, ["a", "b"], ["a", "b"])
    keys["a"] = "changed"  # only a's settings changed: a reruns, b (its own key unchanged) is kept
    st, _, _ = run_all()
    assert calls == ["a", "b", "a"] and st.ran == ["a"] and st.skipped == ["b"]
    (tmp_path / "stages" / "b.json").write_text("{broken")  # a corrupt record = not finished
    st, _, _ = run_all()
    assert st.ran == ["b"] and st.skipped == ["a"]


def test_stage_keys_follow_dependencies(monkeypatch):
    from pyretro.demo import pipeline
    from pyretro.demo.pipeline import _stage_key, stage_fields

    assert "pretrain_steps" in stage_fields("continue_gpt") and "sft_steps" not in stage_fields("retrofit_retro")
    assert "qa_passages" in stage_fields("sft_retro") and "qa_passages" not in stage_fields("eval_ppl")
    a, b = make_config("tiny"), make_config("tiny", sft_steps=3)
    ka, kb = _stage_key(a), _stage_key(b)
    for name in ("corpus", "retrieval", "pretrain_gpt", "retrofit_retro", "eval_ppl"):
        assert ka(name) == kb(name), name
    for name in ("sft_gpt", "sft_retro", "eval_qa", "examples"):
        assert ka(name) != kb(name), name
    kc = _stage_key(make_config("tiny", reading_docs=1))  # a corpus setting redoes everything after the corpus
    assert all(ka(name) != kc(name) for name in ("corpus", "ingest", "pretrain_gpt", "eval_qa"))
    # without reading documents their question count changes nothing
    assert _stage_key(make_config("tiny", reading_questions=5))("corpus") == ka("corpus")
    # a new output version of a stage (an upgrade) redoes it and what reads it, nothing before it
    before = {n: ka(n) for n in pipeline._FIELDS}
    monkeypatch.setitem(pipeline._VERSIONS, "retrieval", pipeline._VERSIONS["retrieval"] + 1)
    kv = _stage_key(a)
    assert [n for n in before if kv(n) == before[n]] == ["corpus", "ingest", "practice"]
    monkeypatch.undo()
    assert set(pipeline._VERSIONS) == set(pipeline._FIELDS) == set(pipeline._INPUTS)
    # practice people: a bursty phase redoes both models from the split on, not pretraining; practice tuning only
    # the tuning and what follows; at their defaults the keys are those from before the settings
    p = make_config("tiny", practice_people=10)
    kb, kp = _stage_key(make_config("tiny", practice_people=10, bursty_steps=3)), _stage_key(p)
    assert kp("corpus") == ka("corpus") and kp("pretrain_gpt") == ka("pretrain_gpt") and kp("practice") != ka("practice")
    assert kb("pretrain_gpt") == kp("pretrain_gpt")
    assert kb("continue_gpt") != kp("continue_gpt") and kb("retrofit_retro") != kp("retrofit_retro")
    ks = _stage_key(make_config("tiny", practice_people=10, sft_data="practice"))
    assert ks("retrofit_retro") == kp("retrofit_retro") and ks("sft_gpt") != kp("sft_gpt")
    assert _stage_key(make_config("tiny", bursty_seq_len=64))("eval_qa") == ka("eval_qa")


def test_fresh_run_dir_keeps_only_same_settings(tmp_path):
    from pyretro.demo.pipeline import fresh_run_dir

    run = tmp_path / "runs" / "phase"
    fresh_run_dir(run, "k1")
    (run / "checkpoints").mkdir()
    fresh_run_dir(run, "k1")  # same settings (a killed run): kept for resume
    assert (run / "checkpoints").is_dir()
    fresh_run_dir(run, "k2")  # other settings: never resumed
    assert not (run / "checkpoints").exists() and (run / "demo_key").read_text() == "k2"


def test_cli_rejects_bad_set(capsys):
    from pyretro.cli.main import main

    assert main(["demo", "--size", "tiny", "--set", "nonsense"]) == 1
    assert "FIELD=VALUE" in capsys.readouterr().err
    assert main(["demo", "--size", "tiny", "--set", "bogus=1"]) == 1
    assert "bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_tiny_end_to_end_and_resume(tmp_path, capsys):
    from pyretro.cli.main import main

    out = tmp_path / "demo"
    assert main(["demo", "--size", "tiny", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "report.md" in printed and "held-out perplexity" in printed
    for name in ("report.md", "report.png", "metrics.json", "config.json", "eval/qa.json",
                 "models/continue_gpt.safetensors", "models/retrofit_retro.safetensors",
                 "models/sft_retro.safetensors", "db/tokenizer.json", "qa/qa_eval.jsonl"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["stages"]) == STAGES and m["ran"] == STAGES
    ppl = m["stages"]["eval_ppl"]
    for mode in ("gpt", "retro", "retro-decoder"):
        assert ppl[mode]["ppl"] > 1 and ppl[mode]["tokens"] > 0
    assert ppl["ratio_retro_over_gpt"] == pytest.approx(ppl["retro"]["ppl"] / ppl["gpt"]["ppl"])
    reuse = ppl["name_reuse"]
    assert set(reuse) == {"gpt", "retro-decoder"}
    assert all(v["first_tokens"] > 0 and v["later_tokens"] > 0 and v["first_nll"] > 0 for v in reuse.values())
    assert set(m["stages"]["eval_qa"]["table"]) == {"gpt (closed-book)", "gpt", "retro", "retro-decoder"}
    copy = m["stages"]["eval_qa"]["copying"]
    assert set(copy) == {"gpt", "retro-decoder"} and all(v["first_nll"] > 0 for v in copy.values())
    assert m["stages"]["retrofit_retro"]["curve"], "validation curve missing"
    report = (out / "report.md").read_text()
    assert "Retro / GPT" in report and "Wall time" in report and "In-context copying" in report
    assert "Name reuse" in report
    # the report's "Try it" command runs as printed: the demo's database serves re-retrieval outside the demo
    # (its index header rebuilds the fitted embedder)
    block = re.search(r"## Try it.*?```bash\n(.*?)```", report, re.S).group(1).replace("\\\n", " ")
    argv = shlex.split(block)
    assert argv[:2] == ["pyretro", "generate"]
    assert main([*argv[1:], "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["tokens"] > 0 and rec["retrievals"] and all(r["neighbors"] for r in rec["retrievals"])
    # a copied database directory opens without its original idf path (the idf beside the index is used)
    import shutil

    from pyretro.retrieval import Retriever

    shutil.copytree(out / "db", tmp_path / "moved")
    (out / "db/idf.npy").rename(out / "db/idf.npy.away")
    try:
        r = Retriever.open(tmp_path / "moved/database", tmp_path / "moved/index")
        assert str(tmp_path / "moved") in r.embedder.spec and len(r.query_chunks(["The city where"], k=2)[0]) == 2
    finally:
        (out / "db/idf.npy.away").rename(out / "db/idf.npy")
    # a rerun skips every finished stage and rewrites the same numbers
    assert main(["demo", "--size", "tiny", "--out", str(out), "--quiet"]) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["skipped"] == STAGES and m2["ran"] == []
    assert m2["stages"] == m["stages"]


@pytest.mark.slow
def test_demo_tiny_with_practice_people(tmp_path):
    """The two practice steps in the pipeline: a bursty-pair phase both models start from (a stage of its own, in
    the report and the plot) and instruction tuning on practice conversations (a loss on every answer)."""
    from pyretro.demo import run_demo
    from pyretro.train import SFTDataset

    cfg = make_config("tiny", practice_people=24, bursty_steps=4, sft_data="practice",
                      pretrain_steps=6, continue_steps=4, sft_steps=3, qa_eval=4, examples=1)
    m = run_demo(cfg, tmp_path / "d", progress=False)
    stages = STAGES[:2] + ["practice"] + STAGES[2:5] + ["bursty_gpt"] + STAGES[5:]
    assert m["ran"] == stages and m["stages"]["practice"]["people"] == 24
    assert m["stages"]["practice"]["store"]["docs"] == 24
    assert m["stages"]["bursty_gpt"]["steps"] == 4 and m["stages"]["bursty_gpt"]["curve"]
    run_cfg = json.loads((tmp_path / "d" / "runs" / "bursty_gpt" / "config.json").read_text())
    assert run_cfg["data"]["seq_len"] == cfg.bursty_seq_len  # the run records the pairs' sample length
    report = (tmp_path / "d" / "report.md").read_text()
    assert "then 4 on bursty pairs" in report and "conversations about 24 practice people" in report
    # practice tuning rows carry every answer of a conversation in the loss
    ds = SFTDataset(str(tmp_path / "d" / "corpus" / "practice_sft.jsonl"), str(tmp_path / "d" / "db" / "tokenizer.json"),
                    seq_len=cfg.practice_seq_len, all_turns=True, pack=False)
    assert ds.num_truncated == 0  # the passage is never cut to make room
    ids, mask = ds.conversation(0)
    runs = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8)])) == 1)
    assert len(runs) == 9  # one loss span per answer
