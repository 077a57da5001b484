"""``pyretro generate``: the CLI gives what the library's ``generate`` gives (GPT, Retro with fixed passages,
Retro re-retrieving from a real store + index), shows what re-retrieval found, and rejects bad arguments."""

from __future__ import annotations

import json

import pytest
import torch
from _eval_fixtures import CHUNK, corpus, store_and_index, tiny_models_for, tokenizer

from pyretro.cli.main import main
from pyretro.data.chat import ChatTemplate
from pyretro.eval.generation import passage_neighbors, retriever_fn
from pyretro.model.generate import generate
from pyretro.model.io import save

PROMPT = "Records show that the city of"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from pyretro.retrieval import Retriever

    d = tmp_path_factory.mktemp("gen")
    c = corpus()
    tok = tokenizer(c)
    tok.save(str(d / "tokenizer.json"))
    gpt, retro = tiny_models_for(tok)
    save(gpt, d / "gpt.safetensors")
    save(retro, d / "retro.safetensors")
    paths = store_and_index(tok, c, d)
    return {"dir": d, "tok": tok, "gpt": gpt, "retro": retro, "store": paths["store"], "index": paths["index"],
            "retriever": Retriever.open(paths["store"], paths["index"]), "context": c.documents[0]["text"]}


def gen_json(capsys, *argv, err: list | None = None) -> list[dict]:
    code = main(["generate", *map(str, argv), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    if err is not None:
        err.append(out.err)
    return json.loads(out.out)


def expected(files, model, prompt_ids, n, **kw) -> str:
    tmpl = ChatTemplate(files["tok"])
    new = generate(model, [prompt_ids], max_new_tokens=n, stop_tokens=[tmpl.eod_id], pad_id=tmpl.pad_id, **kw)[0]
    return files["tok"].decode(new)


def test_gpt_and_retro_decoder_match_the_library(files, capsys):
    d, tok = files["dir"], files["tok"]
    ids = tok.encode(PROMPT, add_special_tokens=False).ids
    recs = gen_json(capsys, "--model", d / "gpt.safetensors", "--tokenizer", d / "tokenizer.json", "--prompt",
                    PROMPT, "--prompt", "Not many people", "--max-new-tokens", 12)
    assert [r["prompt"] for r in recs] == [PROMPT, "Not many people"]
    assert recs[0]["completion"] == expected(files, files["gpt"], ids, 12) and recs[0]["tokens"] > 0
    # a Retro model without neighbours runs its decoder alone, which is the GPT it was retro-fitted from
    err: list[str] = []
    recs = gen_json(capsys, "--model", d / "retro.safetensors", "--tokenizer", d / "tokenizer.json", "--prompt",
                    PROMPT, "--max-new-tokens", 12, err=err)
    assert recs[0]["completion"] == expected(files, files["gpt"], ids, 12)
    assert "decoder alone" in err[0]


def test_retro_re_retrieval_matches_the_library_and_shows_neighbours(files, capsys):
    d, tok, retro = files["dir"], files["tok"], files["retro"]
    prompt = files["context"][:120]
    ids = tok.encode(prompt, add_special_tokens=False).ids
    n = 2 * CHUNK + 3
    rfn = retriever_fn(files["retriever"], 2, tok, retro.retro.r)
    want = expected(files, retro, ids, n, retriever=rfn)
    common = ["--model", d / "retro.safetensors", "--store", files["store"], "--index", files["index"], "--prompt",
              prompt, "--max-new-tokens", n]
    rec = gen_json(capsys, *common, "--show-neighbors")[0]
    assert rec["completion"] == want
    rets = rec["retrievals"]
    # one retrieval per chunk completed before the last token (a chunk completed by the last token is never read)
    assert len(rets) == (len(ids) + rec["tokens"] - 1) // CHUNK
    nocache = gen_json(capsys, *common, "--no-cache")[0]
    assert nocache["completion"] == want  # the recomputing path gives the cached path's tokens
    # each shown retrieval is what the retriever returns for that chunk
    first = torch.tensor([ids[:CHUNK]])
    nb, mask = rfn(first)
    assert rets[0]["chunk"] == tok.decode(ids[:CHUNK])
    assert rets[0]["neighbors"] == [tok.decode(nb[0, j][mask[0, j]].tolist()) for j in range(nb.shape[1])]


def test_show_neighbors_lists_every_chunk_of_repeated_text(files, capsys):
    d, tok = files["dir"], files["tok"]
    prompt = " ".join([files["context"][:40]] * 4)  # identical chunks recur
    ids = tok.encode(prompt, add_special_tokens=False).ids
    rec = gen_json(capsys, "--model", d / "retro.safetensors", "--store", files["store"], "--index",
                   files["index"], "--prompt", prompt, "--max-new-tokens", 2 * CHUNK, "--show-neighbors")[0]
    assert len(rec["retrievals"]) == (len(ids) + rec["tokens"] - 1) // CHUNK
    assert [r["chunk"] for r in rec["retrievals"][: len(ids) // CHUNK]] == [
        tok.decode(ids[i: i + CHUNK]) for i in range(0, len(ids) // CHUNK * CHUNK, CHUNK)]


def test_chat_passages_are_prompt_and_neighbours(files, capsys, tmp_path):
    d, tok, retro = files["dir"], files["tok"], files["retro"]
    tmpl = ChatTemplate(tok)
    q, ctx = "Where was this person born?", files["context"]
    ids = tmpl.encode_prompt(q, [ctx])
    nb, nm = passage_neighbors(tok, [[ctx]], retro.retro.r, 5)
    stops = [tmpl.eod_id] + [tok.token_to_id(m) for m in tmpl.markers.values() if m.startswith("<|")]
    new = generate(retro, [ids], max_new_tokens=6, stop_tokens=stops, pad_id=tmpl.pad_id, neighbors=nb,
                   neighbor_mask=nm)[0]
    recs = gen_json(capsys, "--model", d / "retro.safetensors", "--tokenizer", d / "tokenizer.json", "--chat",
                    "--prompt", q, "--context", ctx, "--max-new-tokens", 6)
    assert recs[0]["completion"] == tok.decode(new).removeprefix(" ")  # the answer's leading space dropped
    # the same from a --prompts JSONL file (question + context per record), and plain-text files
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"question": q, "context": [ctx]}) + "\n\n")
    recs2 = gen_json(capsys, "--model", d / "retro.safetensors", "--tokenizer", d / "tokenizer.json", "--chat",
                     "--prompts", f, "--max-new-tokens", 6)
    assert recs2 == recs
    t = tmp_path / "p.txt"
    t.write_text(f"{PROMPT}\nNot many people\n")
    recs3 = gen_json(capsys, "--model", d / "gpt.safetensors", "--tokenizer", d / "tokenizer.json", "--prompts", t,
                     "--max-new-tokens", 4)
    assert [r["prompt"] for r in recs3] == [PROMPT, "Not many people"]


def test_sampling_is_seeded(files, capsys):
    d = files["dir"]
    argv = ["--model", d / "gpt.safetensors", "--tokenizer", d / "tokenizer.json", "--prompt", PROMPT,
            "--max-new-tokens", 16, "--temperature", 1.5, "--top-k", 50, "--top-p", 0.95]
    a = gen_json(capsys, *argv, "--seed", 3)
    assert a == gen_json(capsys, *argv, "--seed", 3)
    # each prompt's sample depends on the seed and its position only, not on the batch it would share
    two = gen_json(capsys, *argv, "--prompt", "Not many people", "--seed", 3, "--batch-size", 2)
    assert two[0] == a[0] and two == gen_json(capsys, *argv, "--prompt", "Not many people", "--seed", 3,
                                              "--batch-size", 1)
    outs = {gen_json(capsys, *argv, "--seed", s)[0]["completion"] for s in range(4)}
    assert len(outs) > 1, "sampling at temperature 1.5 gave the same text for 4 seeds"


def test_errors(files, capsys, tmp_path):
    d = files["dir"]
    gpt, retro, tk = d / "gpt.safetensors", d / "retro.safetensors", ["--tokenizer", d / "tokenizer.json"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n')
    ctx = tmp_path / "ctx.jsonl"
    ctx.write_text('{"question": "q?", "context": ["a passage"]}\n')
    badctx = tmp_path / "badctx.jsonl"
    badctx.write_text('{"question": "q?", "context": 5}\n')
    cases = [
        (["--model", gpt, *tk], "at least one --prompt"),
        (["--model", gpt, "--prompt", "x"], "--tokenizer is required"),
        (["--model", gpt, *tk, "--prompt", "x", "--store", d / "store", "--index", d / "db/index"], "need a Retro"),
        (["--model", retro, *tk, "--prompt", "x", "--store", d / "store"], "go together"),
        (["--model", retro, *tk, "--prompt", "x", "--context", "p"], "--context needs --chat"),
        (["--model", retro, *tk, "--prompt", "x", "--show-neighbors"], "needs --store"),
        (["--model", gpt, *tk, "--prompt", "x", "--top-p", 0], "--top-p"),
        (["--model", gpt, *tk, "--prompt", "x", "--max-new-tokens", 0], "--max-new-tokens"),
        (["--model", gpt, *tk, "--prompts", bad], "bad.jsonl:2: invalid JSON"),
        (["--model", gpt, *tk, "--prompts", ctx], "need --chat"),
        (["--model", gpt, *tk, "--chat", "--prompts", badctx], "badctx.jsonl:1: 'context' must be a string"),
        (["--model", retro, *tk, "--prompt", "x", "--store", d / "store", "--index", d / "db/index", "--k", 0],
         "--k must be >= 1"),
        (["--model", retro, *tk, "--prompt", "x", "--store", d / "store", "--index", d / "db/index",
          "--show-neighbors", "--no-cache"], "drop --no-cache"),
        (["--model", gpt, *tk, "--prompts", tmp_path / "none.txt"], "no such file"),
        (["--model", tmp_path / "none.safetensors", *tk, "--prompt", "x"], "does not exist"),
    ]
    for argv, msg in cases:
        code = main(["generate", *map(str, argv)])
        err = capsys.readouterr().err
        assert code == 1 and msg in err and "Traceback" not in err, (argv, err)
