"""The "your own corpus" recipe of docs/demo.md, run as written: every command of its bash block, in order,
with the shipped configs/own_corpus/*.toml, on a small generated corpus. Only sizes and step counts are
overridden (appended ``--section.key=value`` or a replaced flag value), so a renamed config key, a changed
command or an output one step cannot read fails here rather than for a user."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from pyretro.cli.main import main
from pyretro.data.synthetic import generate, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SEQ = 128  # two 64-token chunks per sample (the configs' chunk_len stays 64)
EMBEDDER = "hashing:128"  # the recipe's "st" model is slow on CPU and lives in the [retrieval] extra
TINY_GPT = ["--model.gpt.vocab_size=512", "--model.gpt.d_model=32", "--model.gpt.n_layers=6",
            "--model.gpt.n_heads=2", "--model.gpt.max_seq_len=512"]
STEPS = ["--optim.warmup_steps=1", "--train.steps=4", "--train.batch_size=2", "--train.eval_interval=2",
         "--train.ckpt_interval=2", "--train.progress=false"]


def recipe_commands() -> list[list[str]]:
    """The argv lists of the bash block under docs/demo.md's "## Your own corpus" (continuations joined)."""
    text = (ROOT / "docs/demo.md").read_text(encoding="utf-8")
    section = text.split("## Your own corpus", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/demo.md: no bash block under '## Your own corpus'"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    cmds = [shlex.split(line, comments=True) for line in lines]
    cmds = [c for c in cmds if c]
    for c in cmds:
        assert c[0] == "pyretro", f"docs/demo.md recipe: only pyretro commands can be checked, got {c}"
    return [c[1:] for c in cmds]


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    assert flag in argv, f"the recipe's command {argv} lost {flag}"
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def shrink(argv: list[str]) -> list[str]:
    """The recipe's command at test size."""
    cmd = argv[:2] if argv[0] in ("db", "eval") else argv[:1]
    if cmd == ["db", "build"]:
        return [*argv, "--ingest.vocab_size=512", f"--embed.embedder={EMBEDDER}",
                f"--query.chunks_per_sample={SEQ // 64}", "--query.k=4"]
    if cmd == ["db", "embed"]:
        return _set_flag(argv, "--embedder", EMBEDDER)
    if cmd == ["train"] and argv[1].endswith("gpt.toml"):
        return [*argv, *TINY_GPT, f"--data.seq_len={SEQ}", *STEPS]
    if cmd == ["train"]:
        return [*argv, f"--data.seq_len={SEQ}", *STEPS]
    if cmd == ["sft"]:
        return [*argv, "--data.seq_len=512", *STEPS]
    if cmd == ["eval", "ppl"]:
        return [*_set_flag(argv, "--seq-len", str(SEQ)), "--quiet", "--no-plot"]
    if cmd == ["eval", "qa"]:
        return [*argv, "--limit", "4", "--max-new-tokens", "3", "--quiet", "--no-plot"]
    return [*argv, "--quiet"] if cmd == ["db", "query"] else argv


@pytest.fixture()
def corpus_dir(tmp_path, monkeypatch):
    """data/train/*.jsonl, data/heldout.jsonl, data/sft.jsonl, data/sft_val.jsonl, qa.jsonl and a copy of
    configs/, in the working directory the recipe's relative paths start from."""
    c = generate(80, 3, seed=11)
    texts = {d["id"]: d["text"] for d in c.documents}
    db = [{"text": d["text"]} for d in c.database_documents]
    (tmp_path / "data/train").mkdir(parents=True)
    write_jsonl(tmp_path / "data/train/part0.jsonl", db[: len(db) // 2])
    write_jsonl(tmp_path / "data/train/part1.jsonl", db[len(db) // 2:])
    write_jsonl(tmp_path / "data/heldout.jsonl", [{"text": d["text"]} for d in c.eval_documents])
    qa = [{"question": q["question"], "answers": q["answers"], "context": [texts[q["context_ids"][0]]]}
          for q in c.qa]
    write_jsonl(tmp_path / "data/sft.jsonl", qa[:60])
    write_jsonl(tmp_path / "data/sft_val.jsonl", qa[60:70])
    write_jsonl(tmp_path / "qa.jsonl", qa[70:80])
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    return tmp_path


def test_recipe_runs_as_documented(corpus_dir, capsys):
    cmds = recipe_commands()
    kinds = [tuple(c[:2]) if c[0] in ("db", "eval") else (c[0], Path(c[1]).name) for c in cmds]
    assert kinds == [("db", "build"), ("db", "ingest"), ("db", "embed"), ("db", "query"), ("train", "gpt.toml"),
                     ("train", "retrofit.toml"), ("train", "retrofit.toml"), ("sft", "sft.toml"),
                     ("eval", "ppl"), ("eval", "qa")], "the recipe changed: update this test with it"
    for argv in cmds:
        code = main(shrink(argv))
        err = capsys.readouterr().err
        assert code in (0, None), f"`pyretro {shlex.join(argv)}` failed:\n{err[-2000:]}"

    runs = corpus_dir / "runs/own"
    # the retro-fit started from the GPT run and is a Retro model; the continued baseline is a GPT
    retro_cfg = json.loads((runs / "retro/config.json").read_text())
    assert retro_cfg["model"]["kind"] == "retro" and retro_cfg["model"]["init_from"] == "runs/own/gpt"
    ppl = json.loads((runs / "eval/ppl/results.json").read_text())["results"]
    modes = {r["mode"]: r for r in ppl}
    assert set(modes) == {"gpt", "retro", "retro-decoder"}
    for r in ppl:  # both models read the same held-out tokens; an untrained 512-token model is near uniform
        assert r["tokens"] == modes["gpt"]["tokens"] > 0
        assert 50 < r["ppl"] < 2000, r
    qa = json.loads((runs / "eval/qa/results.json").read_text())["results"]
    assert {r["mode"] for r in qa} == {"retro", "retro-decoder"} and all(r["n"] == 4 for r in qa)
