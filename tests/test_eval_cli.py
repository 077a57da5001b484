"""``pyretro eval``: runs end to end on tiny saved models; user errors are one clear line, not a traceback."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from _eval_fixtures import CHUNK, corpus, tiny_models, tiny_models_for, tokenizer

from pyretro.cli.main import main
from pyretro.data.tokenizer import save_tokenizer
from pyretro.model import RetroModel
from pyretro.model.io import save


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    c = corpus()
    tok = tokenizer(c)
    save_tokenizer(tok, root / "tokenizer.json")
    gpt, retro = tiny_models_for(tok)
    save(gpt, root / "gpt.safetensors")
    save(retro, root / "retro.safetensors")
    docs = {d["id"]: d["text"] for d in c.documents}
    with open(root / "qa.jsonl", "w") as f:
        for q in c.qa[:2]:
            f.write(json.dumps({"id": q["id"], "question": q["question"], "answers": q["answers"],
                                "context": [docs[q["context_ids"][0]][:200]]}) + "\n")
    with open(root / "summ.jsonl", "w") as f:
        for d in c.documents[:2]:
            f.write(json.dumps({"id": d["id"], "document": d["text"][:200], "summary": d["text"][:50]}) + "\n")
    small, _ = tiny_models(50)
    save(small, root / "small.safetensors")
    return root


def run(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_qa_all_modes_json_and_report(files, capsys, tmp_path):
    code, out, err = run(capsys, "qa", "--model", files / "gpt.safetensors", "--model", files / "retro.safetensors",
                         "--tokenizer", files / "tokenizer.json", "--data", files / "qa.jsonl",
                         "--max-new-tokens", 2, "--out", tmp_path / "rep", "--json", "--quiet")
    assert code == 0, err
    res = json.loads(out)
    assert [r["mode"] for r in res["results"]] == ["gpt", "retro", "retro-decoder"]
    assert all(r["kind"] == "qa" and r["n"] == 2 and "predictions" not in r for r in res["results"])
    for name in ("results.json", "results.md", "results.png"):
        assert (tmp_path / "rep" / name).is_file()
    full = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert len(full["results"][0]["predictions"]) == 2
    assert "| retro-decoder |" in (tmp_path / "rep" / "results.md").read_text()


def test_summarize_table(files, capsys):
    code, out, err = run(capsys, "summarize", "--model", files / "retro.safetensors", "--tokenizer",
                         files / "tokenizer.json", "--data", files / "summ.jsonl", "--mode", "retro-decoder",
                         "--max-new-tokens", 3, "--quiet")
    assert code == 0, err
    assert "ROUGE-1" in out and "retro-decoder" in out


def test_ppl_on_a_store_with_neighbours(tmp_path, capsys):
    from _retrieval_fixtures import VOCAB, make_store

    from pyretro.retrieval.pipeline import build_database, resolve

    make_store(tmp_path / "store", num_docs=24, chunk_len=CHUNK, max_len=60)
    paths = build_database(resolve({
        "build": {"out": str(tmp_path / "db"), "progress": False}, "store": {"path": str(tmp_path / "store")},
        "embed": {"embedder": "hashing:64", "device": "cpu"}, "index": {"factory": "Flat", "recall_sample": 0},
        "query": {"k": 2, "chunks_per_sample": 4}}))
    gpt, retro = tiny_models(VOCAB)
    save(gpt, tmp_path / "gpt.safetensors")
    retro = RetroModel.from_gpt(gpt, replace(retro.retro, neighbor_len=2 * CHUNK + 4))  # r != the 2*chunk default
    for c in retro.cca:
        torch.nn.init.normal_(c.o.weight, 0.0, 0.5)
    save(retro, tmp_path / "retro.safetensors")
    code, out, err = run(capsys, "ppl", "--model", tmp_path / "gpt.safetensors", "--model",
                         tmp_path / "retro.safetensors", "--data", tmp_path / "store", "--neighbors",
                         paths["neighbors"], "--seq-len", 4 * CHUNK, "--json", "--quiet")
    assert code == 0, err
    res = json.loads(out)["results"]
    assert [r["mode"] for r in res] == ["gpt", "retro", "retro-decoder"]
    assert res[0]["ppl"] == pytest.approx(res[2]["ppl"], rel=1e-5)  # decoder alone == its GPT
    assert res[0]["clean"]["tokens"] + res[0]["leaky"]["tokens"] == res[0]["tokens"]
    assert res[1]["settings"]["neighbor_len"] == 2 * CHUNK + 4  # the model's r, not the dataset default
    assert res[1]["leaky_chunks"] > 0  # the store repeats documents: some neighbours copy the next chunk
    # without a neighbour table mode retro is skipped by default and refused when asked for
    code, out, err = run(capsys, "ppl", "--model", tmp_path / "retro.safetensors", "--data", tmp_path / "store",
                         "--seq-len", 4 * CHUNK, "--json", "--quiet")
    assert code == 0 and [r["mode"] for r in json.loads(out)["results"]] == ["retro-decoder"]
    code, _, err = run(capsys, "ppl", "--model", tmp_path / "retro.safetensors", "--data", tmp_path / "store",
                       "--seq-len", 4 * CHUNK, "--mode", "retro", "--quiet")
    assert code == 1 and "needs --neighbors" in err


def test_errors(files, capsys, tmp_path):
    base = ["--tokenizer", files / "tokenizer.json", "--quiet"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answers": ["a"]}\n{oops\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cases = [
        (["qa", "--model", tmp_path / "nope.safetensors", "--data", files / "qa.jsonl"], "does not exist"),
        (["qa", "--model", tmp_path, "--data", files / "qa.jsonl"], "no model.safetensors and no checkpoint"),
        (["qa", "--model", files / "gpt.safetensors", "--data", tmp_path / "nope.jsonl"], "no such file"),
        (["qa", "--model", files / "gpt.safetensors", "--data", bad], "bad.jsonl:2: invalid JSON"),
        (["qa", "--model", files / "gpt.safetensors", "--data", empty], "holds no records"),
        (["qa", "--model", files / "small.safetensors", "--data", files / "qa.jsonl"], "vocab_size is 50"),
        (["qa", "--model", files / "gpt.safetensors", "--data", files / "qa.jsonl", "--mode", "retro"],
         "needs a Retro model"),
        (["qa", "--model", files / "gpt.safetensors", "--model", files / "gpt.safetensors", "--data",
          files / "qa.jsonl"], "two gpt models"),
        (["qa", "--model", files / "retro.safetensors", "--data", files / "qa.jsonl", "--mode", "retro-retrieve"],
         "needs --store and --index"),
        (["qa", "--model", files / "gpt.safetensors", "--data", files / "qa.jsonl", "--mode", "bert"], "unknown"),
        (["summarize", "--model", files / "gpt.safetensors", "--data", files / "qa.jsonl"], "qa.jsonl:1: missing or empty 'document'"),
        (["ppl", "--model", files / "gpt.safetensors", "--data", tmp_path / "nostore", "--seq-len", 16],
         "no such chunk store"),
    ]
    for argv, msg in cases:
        code, _, err = run(capsys, *argv, *base)
        assert code == 1 and msg in err and "Traceback" not in err, (argv, err)
    code, _, err = run(capsys, "qa", "--model", files / "gpt.safetensors", "--data", files / "qa.jsonl", "--quiet")
    assert code == 1 and "--tokenizer is required" in err


def test_model_from_checkpoint_directory(files, capsys, tmp_path):
    """--model takes a checkpoint directory (its model.safetensors) as well as the file itself."""
    import shutil

    ck = tmp_path / "step_00000007"
    ck.mkdir()
    shutil.copy(files / "gpt.safetensors", ck / "model.safetensors")
    base = ["--data", files / "qa.jsonl", "--tokenizer", files / "tokenizer.json", "--limit", 3, "--json", "--quiet"]
    code, out, err = run(capsys, "qa", "--model", ck, *base)
    assert code == 0, err
    code, out_file, err = run(capsys, "qa", "--model", files / "gpt.safetensors", *base)
    assert code == 0 and json.loads(out)["results"] == json.loads(out_file)["results"]
