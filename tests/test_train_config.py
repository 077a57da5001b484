"""Training config: TOML/YAML/JSON, overrides with type checks, unknown keys, schedule and optimizer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyretro.errors import ConfigError
from pyretro.model import GPT, GPTConfig
from pyretro.train.config import OptimSection, TrainConfig, load_config
from pyretro.train.optim import build_optimizer, build_scheduler, lr_factor

TOML = """
[model]
kind = "retro"
[model.gpt]
vocab_size = 128
d_model = 64
n_layers = 3
n_heads = 4
[model.retro]
chunk_len = 8
cca_layers = [2, 3]

[data]
train = ["a", "b"]
weights = [1, 3]
seq_len = 32

[optim]
lr = 1e-3
betas = [0.9, 0.99]

[train]
steps = 10
out_dir = "runs/x"
"""


def test_toml_nested_sections_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(TOML)
    cfg = load_config(p, ["--optim.lr=5e-4", "--model.gpt.n_layers=6", "--train.out_dir=123",
                          "--data.val=v", "--model.gpt.n_kv_heads=2", "--optim.decay_steps=none"])
    assert cfg.model.gpt.vocab_size == 128 and cfg.model.gpt.n_layers == 6 and cfg.model.gpt.n_kv_heads == 2
    assert cfg.model.retro.cca_layers == (2, 3)
    assert cfg.data.weights == [1.0, 3.0] and isinstance(cfg.data.weights[0], float)
    assert cfg.optim.lr == 5e-4 and cfg.optim.betas == [0.9, 0.99] and cfg.optim.decay_steps is None
    assert cfg.train.out_dir == "123"  # a string field keeps the raw text
    assert cfg.data.val == ["v"]  # a single item for a list field
    assert cfg.train.steps == 10 and cfg.train.batch_size == TrainConfig().train.batch_size
    # round trip through JSON (the copy saved in runs and checkpoints)
    cfg.save(tmp_path / "config.json")
    again = load_config(tmp_path / "config.json")
    assert again == cfg


@pytest.mark.parametrize("override, needle", [
    ("--optim.lrr=1", "'lrr'"),
    ("--nosuch.x=1", "'nosuch'"),
    ("--optim.lr=fast", "optim.lr"),
    ("--train.steps=1.5", "train.steps"),
    ("--train.activation_checkpointing=3", "train.activation_checkpointing"),
    ("--model.gpt.n_heads=5", "n_heads"),  # 64 % 5 != 0: GPTConfig's own check
    ("--train.distributed=mpi", "train.distributed"),
    ("--optim.min_lr_ratio=2", "min_lr_ratio"),
    ("--data.weights=[1]", "data.weights"),
    ("optim.lr", "expected --section.key=value"),
])
def test_bad_overrides_name_the_key(tmp_path, override, needle):
    p = tmp_path / "c.toml"
    p.write_text(TOML)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_config(p, [override])


def test_unknown_keys_in_file_are_listed(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(TOML + "\n[sft]\ngate_of = true\nanswer_onl = false\n")
    with pytest.raises(ConfigError, match=r"\[sft\]: unknown key\(s\) answer_onl, gate_of"):
        load_config(p)
    p.write_text(TOML.replace("[model.retro]", "[model.retro]\nchunk = 3"))
    with pytest.raises(ConfigError, match=r"\[model\.retro\]: unknown key\(s\) chunk"):
        load_config(p)
    p.write_text("[bogus]\nx = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    p.write_text("[optim\nlr=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)


def test_yaml_config(tmp_path):
    yaml = pytest.importorskip("yaml")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"model": {"kind": "gpt", "gpt": {"n_layers": 2}}, "optim": {"lr": 0.01}}))
    cfg = load_config(p)
    assert cfg.model.kind == "gpt" and cfg.model.gpt.n_layers == 2 and cfg.optim.lr == 0.01


def test_lr_schedule_warmup_cosine_floor():
    f = [lr_factor(s, 10, 90, 0.1) for s in range(120)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup to the peak
    assert all(b > a for a, b in zip(f[:9], f[1:10], strict=True))
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(b <= a + 1e-12 for a, b in zip(f[10:100], f[11:101], strict=True))  # monotone decay
    assert f[100] == pytest.approx(0.1) and f[119] == pytest.approx(0.1)  # the floor, held


def test_optimizer_groups_and_scheduler():
    model = GPT(GPTConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2))
    cfg = OptimSection(lr=1e-2, weight_decay=0.05, warmup_steps=2)
    opt = build_optimizer(model, cfg)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert not opt.defaults.get("fused")  # CPU: foreach, not fused
    n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters())  # tied weights counted once
    sched = build_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-2 * lr_factor(9, 2, 8, 0.1))
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(model, cfg)


def test_cli_print_config_and_errors(tmp_path, capsys):
    from pyretro.cli.main import main

    p = tmp_path / "c.toml"
    p.write_text(TOML)
    assert main(["train", str(p), "--print-config", "--optim.lr=2e-4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["optim"]["lr"] == 2e-4 and out["model"]["gpt"]["d_model"] == 64
    assert main(["train", str(p), "--optim.nope=1"]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'nope'" in err and "Traceback" not in err
    assert main(["sft", "-", "--print-config", "--sft.retrieval_on=true"]) == 0
    assert json.loads(capsys.readouterr().out)["sft"]["retrieval_on"] is True


def test_config_defaults_follow_the_papers():
    cfg = TrainConfig()
    assert cfg.optim.betas == [0.9, 0.95] and cfg.optim.min_lr_ratio == 0.1
    assert cfg.sft.gate_off and cfg.sft.answer_only and not cfg.sft.retrieval_on
    assert torch.tensor(cfg.data.seq_len) % cfg.model.retro.chunk_len == 0


def test_retrieval_lr_scale_puts_encoder_and_cca_in_their_own_groups():
    from pyretro.model import RetroConfig, RetroModel

    gpt = GPT(GPTConfig(vocab_size=32, d_model=16, n_layers=2, n_heads=2))
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=4, encoder_layers=1, cca_layers=(2,)))
    retrieval = {id(p) for n, p in model.named_parameters() if n.startswith(("encoder.", "cca."))}
    cfg = OptimSection(lr=1e-2, warmup_steps=2, retrieval_lr_scale=5.0)
    opt = build_optimizer(model, cfg)
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= retrieval if g["lr_scale"] == 5.0 else not ids & retrieval
        assert g["lr"] == pytest.approx(1e-2 * g["lr_scale"])
        assert g["weight_decay"] == (cfg.weight_decay if all(p.dim() >= 2 for p in g["params"]) else 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = build_scheduler(opt, cfg, total_steps=10)  # the schedule scales every group alike
    opt.step()
    sched.step()
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx(sorted(1e-2 * g["lr_scale"] for g in opt.param_groups))
    model.decoder.requires_grad_(False)  # RETRO-fitting: only the retrieval groups remain
    assert {g["lr_scale"] for g in build_optimizer(model, cfg).param_groups} == {5.0}
    with pytest.raises(ValueError, match="retrieval_lr_scale"):
        build_optimizer(model, OptimSection(retrieval_lr_scale=0.0))
