"""End to end through the config and CLI: ``pyretro train`` on real stores + neighbour tables (TRAIN-DATA's
RetroDataset / BlendedDataset), ``pyretro sft`` on JSONL QA with a chat tokenizer, errors without traceback."""

from __future__ import annotations

import json

import pytest
import torch
from _train_fixtures import CHUNK, SEQ, build_store_and_table, one_thread  # noqa: F401 (autouse fixture)

from pyretro.cli.main import main
from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel
from pyretro.model.io import load, save
from pyretro.train.checkpoint import latest_checkpoint
from pyretro.train.logs import read_metrics

MODEL = f"""
[model]
kind = "retro"
[model.gpt]
vocab_size = 300
d_model = 32
n_layers = 2
n_heads = 2
[model.retro]
chunk_len = {CHUNK}
cca_layers = [2]
encoder_layers = 1
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_store_and_table(tmp_path_factory.mktemp("db"))


def _toml(tmp_path, db, out, extra: str = "") -> str:
    p = tmp_path / "train.toml"
    p.write_text(MODEL + f"""
[data]
train = ["{db['store']}", "{db['store']}"]
train_neighbors = ["{db['neighbors']}", "{db['neighbors']}"]
weights = [1.0, 2.0]
val = ["{db['store']}"]
val_neighbors = ["{db['neighbors']}"]
seq_len = {SEQ}
num_workers = 0

[optim]
lr = 3e-3
warmup_steps = 1

[train]
steps = 3
batch_size = 4
out_dir = "{out}"
progress = false
eval_batches = 2
log_interval = 1
""" + extra)
    return str(p)


def test_cli_train_retro_on_stores_then_gpt(tmp_path, db, capsys):
    out = tmp_path / "run"
    assert main(["train", _toml(tmp_path, db, out)]) == 0
    line = capsys.readouterr().out
    assert "steps=3" in line and "val/store/ppl=" in line and "val/store/no_retrieval/ppl=" in line
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3]
    assert (out / "loss.png").is_file() and json.loads((out / "config.json").read_text())["data"]["weights"] == [1, 2]
    model = load(latest_checkpoint(out) / "model.safetensors")
    assert isinstance(model, RetroModel) and model.config.vocab_size == 300
    # continue the same run for 2 more steps (resume = auto)
    assert main(["train", _toml(tmp_path, db, out), "--train.steps=5"]) == 0
    assert "steps=5" in capsys.readouterr().out
    # a GPT on the same store, without neighbours
    assert main(["train", _toml(tmp_path, db, tmp_path / "gpt"), "--model.kind=gpt", "--data.train_neighbors=[]",
                 "--data.val_neighbors=[]"]) == 0
    assert isinstance(load(latest_checkpoint(tmp_path / "gpt") / "model.safetensors"), GPT)


def test_cli_db_in_memory_trains_identically(tmp_path, db):
    losses = []
    for name, extra in (("mapped", []), ("ram", ["--data.db_in_memory=true"])):
        out = tmp_path / name
        assert main(["train", _toml(tmp_path, db, out), *extra]) == 0
        losses.append([r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"])
    assert losses[0] == losses[1] and len(losses[0]) == 3  # same neighbours, read from RAM instead of the map


@pytest.mark.parametrize("override, message", [
    ("--model.gpt.vocab_size=100", "vocab_size 300"),  # store tokenizer larger than the model
    ("--data.train_neighbors=[]", "neighbour table"),  # Retro needs neighbours
    ('--data.train=["/nonexistent/store", "/nonexistent/store"]', "/nonexistent/store"),
    ("--data.seq_len=18", "chunk_len"),
    ("--model.init_from=/nonexistent/model.safetensors", "does not exist"),
])
def test_cli_bad_input_is_one_line(tmp_path, db, capsys, override, message):
    assert main(["train", _toml(tmp_path, db, tmp_path / "bad"), override]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("pyretro train: error:")
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_cli_table_of_another_database_is_refused(tmp_path, db, capsys):
    from _retrieval_fixtures import make_store

    other = make_store(tmp_path / "other", num_docs=8, chunk_len=CHUNK, seed=9)
    assert main(["train", _toml(tmp_path, db, tmp_path / "bad"), f"--data.db={other.path}"]) == 1
    err = capsys.readouterr().err
    assert "neighbour table of database store" in err and "Traceback" not in err


QA = [
    {"question": f"Where was person {i} born?", "answers": [f"city {i % 7}"],
     "context": [f"Person {i} was born in city {i % 7}.", f"Person {i} works at company {i % 5}."]}
    for i in range(24)
]


@pytest.mark.parametrize("retrieval_on", [False, True])
def test_cli_sft_on_jsonl(tmp_path, retrieval_on, capsys):
    from pyretro.data.tokenizer import save_tokenizer, train_bpe

    texts = [q["question"] + " " + q["answers"][0] + " " + " ".join(q["context"]) for q in QA]
    tok = train_bpe(texts * 4, vocab_size=300, min_frequency=1)
    save_tokenizer(tok, tmp_path / "tok.json")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QA))
    torch.manual_seed(0)
    base = RetroModel.from_gpt(GPT(GPTConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2)),
                               RetroConfig(chunk_len=8, cca_layers=(2,), encoder_layers=1, neighbor_len=16))
    save(base, tmp_path / "base.safetensors")
    cfg = tmp_path / "sft.toml"
    cfg.write_text(f"""
[model]
init_from = "{tmp_path / 'base.safetensors'}"
[data]
sft_train = "{tmp_path / 'qa.jsonl'}"
sft_val = "{tmp_path / 'qa.jsonl'}"
tokenizer = "{tmp_path / 'tok.json'}"
seq_len = 64
num_workers = 0
[optim]
lr = 1e-3
warmup_steps = 1
[train]
steps = 2
batch_size = 4
out_dir = "{tmp_path / 'sft'}"
progress = false
[sft]
retrieval_on = {str(retrieval_on).lower()}
""")
    assert main(["sft", str(cfg)]) == 0
    line = capsys.readouterr().out
    assert "val/sft_val/ppl=" in line and ("no_retrieval" in line) == retrieval_on
    tuned = load(latest_checkpoint(tmp_path / "sft") / "model.safetensors")
    assert float(tuned.gate) == (1.0 if retrieval_on else 0.0)
    # a tokenizer larger than the model is refused before training
    save(GPT(GPTConfig(vocab_size=100, d_model=16, n_layers=1, n_heads=2)), tmp_path / "small.safetensors")
    assert main(["sft", str(cfg), "--model.init_from=" + str(tmp_path / "small.safetensors"), "--model.kind=gpt",
                 "--train.out_dir=" + str(tmp_path / "small")]) == 1
    assert "vocab_size 300 > the model's vocab_size 100" in capsys.readouterr().err


def test_sft_config_resolves_context_ids_and_caps_passages(tmp_path):
    """`pyretro sft` on the synthetic corpus' qa.jsonl (context_ids) needs the documents; max_context keeps
    the prompts the same as evaluation's."""
    from pyretro.data.tokenizer import save_tokenizer, train_bpe
    from pyretro.train.config import TrainConfig
    from pyretro.train.sft import build_sft_datasets

    docs = [{"id": f"d{i}", "text": f"passage number {i} says the colour is {c}"}
            for i, c in enumerate(["red", "blue", "green"])]
    recs = [{"question": "what colour?", "answers": ["blue"], "context_ids": ["d1", "d0", "d2"]}]
    tok = train_bpe([d["text"] for d in docs] * 4 + ["what colour? blue"] * 4, vocab_size=300, min_frequency=1)
    save_tokenizer(tok, tmp_path / "tok.json")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = TrainConfig.from_dict({"data": {"sft_train": str(tmp_path / "qa.jsonl"), "tokenizer": str(tmp_path / "tok.json"),
                                          "sft_documents": str(tmp_path / "docs.jsonl"), "seq_len": 256},
                                 "sft": {"max_context": 1}})
    model = GPT(GPTConfig(vocab_size=300, d_model=16, n_layers=1, n_heads=2))
    train_ds, _ = build_sft_datasets(cfg, model)
    text = tok.decode(train_ds.conversation(0)[0].tolist())
    assert "number 1" in text and "number 0" not in text and "number 2" not in text
