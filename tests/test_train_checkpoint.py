"""Checkpoints: exact resume after a real SIGKILL, keep-last-N, the latest pointer, contents, mismatches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _train_fixtures import PatternDataset, one_thread, tiny_config  # noqa: F401 (autouse fixture)

import pyretro
from pyretro.errors import ConfigError, MismatchError
from pyretro.model.io import load
from pyretro.train.checkpoint import latest_checkpoint, list_checkpoints
from pyretro.train.logs import read_metrics
from pyretro.train.loop import train

TESTS = Path(__file__).resolve().parent
# the directory pyretro was imported from: the source tree in a dev build, site-packages when installed
PKG_PARENT = Path(pyretro.__file__).resolve().parents[1]

# dropout on: the resumed run must also restore the RNG streams to match
RUN = dict(train__steps=8, train__ckpt_interval=2, model__gpt__dropout=0.1)

KILLED = """
import os, signal, sys, torch
torch.set_num_threads(1)
from _train_fixtures import PatternDataset, tiny_config
from pyretro.train.loop import train

def kill(step, metrics):
    if step == 5:  # after checkpoint 4, before checkpoint 6
        os.kill(os.getpid(), signal.SIGKILL)

train(tiny_config(sys.argv[1], "retro", **{run}), train_data=PatternDataset(40), on_step=kill)
"""


@pytest.mark.slow  # a subprocess (~4 s idle, more on a loaded machine)
def test_resume_after_sigkill_continues_exactly(tmp_path):
    killed_dir = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(KILLED.format(run=RUN)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PKG_PARENT), str(TESTS)])}
    proc = subprocess.run([sys.executable, str(script), str(killed_dir)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert latest_checkpoint(killed_dir).name == "step_00000004"
    before = {r["step"]: r["loss"] for r in read_metrics(killed_dir / "metrics.jsonl") if r["kind"] == "train"}
    assert sorted(before) == [1, 2, 3, 4, 5]

    full = train(tiny_config(tmp_path / "full", "retro", **RUN), train_data=PatternDataset(40))
    resumed = train(tiny_config(killed_dir, "retro", **RUN), train_data=PatternDataset(40))
    assert resumed.resumed_from.name == "step_00000004" and sorted(resumed.losses) == [5, 6, 7, 8]
    assert {s: full.losses[s] for s in before} == before  # the killed process computed the same steps
    assert {s: full.losses[s] for s in resumed.losses} == resumed.losses  # exact, not approximate
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # the metrics file was cut back to the checkpoint: one record per step, like the uninterrupted run
    steps = [r["step"] for r in read_metrics(killed_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 9))


def test_keep_last_n_latest_pointer_and_contents(tmp_path):
    cfg = tiny_config(tmp_path, "retro", train__steps=5, train__ckpt_interval=1, train__keep_last_n=2,
                      train__plot=True, data__num_workers=1)
    res = train(cfg, train_data=PatternDataset(24), val_data=PatternDataset(8, seed=2))
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert [c.name for c in ckpts] == ["step_00000004", "step_00000005"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000005"
    assert res.checkpoint == ckpts[-1] == latest_checkpoint(tmp_path)
    assert json.loads((res.checkpoint / "config.json").read_text()) == cfg.to_dict()
    assert json.loads((tmp_path / "config.json").read_text()) == cfg.to_dict()
    trainer = torch.load(res.checkpoint / "trainer.pt", weights_only=False)
    assert trainer["step"] == 5 and trainer["data"]["consumed"] == 5 * cfg.train.batch_size
    assert trainer["scheduler"]["last_epoch"] == 5 and {"python", "numpy", "torch"} <= set(trainer["rng"][0])
    model = load(res.checkpoint / "model.safetensors")  # a plain pyretro model file
    for k, v in model.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(recs[0])
    val = [r for r in recs if r["kind"] == "val"]
    assert len(val) == 1 and "val/val/no_retrieval/ppl" in val[0]  # eval_interval 0: at the end only
    assert (tmp_path / "loss.png").stat().st_size > 1000
    # a leftover temp dir of a killed save and a lost pointer are ignored
    (tmp_path / "checkpoints" / ".tmp_step_00000009_1").mkdir()
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step_00000005"
    again = train(cfg, train_data=PatternDataset(24))  # finished: nothing left to do
    assert again.step == 5 and again.losses == {}


def test_resume_into_another_architecture_is_refused(tmp_path):
    train(tiny_config(tmp_path, "retro", train__steps=2), train_data=PatternDataset(8))
    from pyretro.train.models import build_model

    other = tiny_config(tmp_path, "retro", train__steps=4, model__gpt__d_model=48)
    with pytest.raises(MismatchError, match="does not match the model being trained"):
        train(other, model=build_model(other.model), train_data=PatternDataset(8))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(tiny_config(tmp_path, train__resume="never"), train_data=PatternDataset(8))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_config(tmp_path / "x", train__resume=str(tmp_path / "nothing")), train_data=PatternDataset(8))


def test_keep_last_n_ignores_newer_abandoned_and_cleans_temp(tmp_path):
    """Saving after a resume from an older checkpoint: the abandoned run's later checkpoints must not count
    towards keep-last-N (they used to evict this run's own ones); half-written temp dirs are cleaned."""
    from pyretro.model import GPT, GPTConfig
    from pyretro.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, max_seq_len=16))
    opt = torch.optim.AdamW(model.parameters())
    root = tmp_path / "checkpoints"
    abandoned = root / "step_00001000"
    abandoned.mkdir(parents=True)
    (abandoned / "trainer.pt").write_bytes(b"x")
    (root / ".tmp_step_00000700_12345").mkdir()  # a save killed mid-write
    for step in (500, 600):
        save_checkpoint(root, step, model, opt, None, data_state={}, config={}, keep_last_n=2)
    assert [c.name for c in list_checkpoints(root)] == ["step_00000500", "step_00000600", "step_00001000"]
    assert latest_checkpoint(tmp_path).name == "step_00000600"
    assert not list(root.glob(".tmp_*"))
    save_checkpoint(root, 700, model, opt, None, data_state={}, config={}, keep_last_n=2)
    assert [c.name for c in list_checkpoints(root)] == ["step_00000600", "step_00000700", "step_00001000"]
