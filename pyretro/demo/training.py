"""The demo's training phases, each one run of ``pyretro.train.train`` (resumable: a killed phase restarts from
its last checkpoint): GPT pretraining, then on the same budget GPT continued pretraining and Retro retro-fitting
from that GPT, then InstructRetro instruction tuning of both."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from pyretro.demo.config import DemoConfig
from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel
from pyretro.model.io import load, save
from pyretro.train import (
    DataSection,
    ModelSection,
    OptimSection,
    SFTDataset,
    SFTSection,
    TrainConfig,
    TrainSection,
    train,
)
from pyretro.train.logs import read_metrics


def gpt_config(cfg: DemoConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                     max_seq_len=max(1024, cfg.seq_len, cfg.sft_seq_len))


def retro_config(cfg: DemoConfig) -> RetroConfig:
    return RetroConfig(chunk_len=cfg.chunk_len, num_neighbors=cfg.k_train, neighbor_len=cfg.r,
                       encoder_layers=cfg.encoder_layers,
                       encoder_d_model=cfg.encoder_d_model, cca_layers=tuple(cfg.cca_layers),
                       cca_rotary=cfg.cca_rotary, cca_qk_norm=cfg.cca_qk_norm,
                       cca_position_bias=cfg.cca_position_bias)


def _train_config(cfg: DemoConfig, model: nn.Module, run_dir: Path, *, steps: int, lr: float, batch_size: int,
                  seq_len: int, progress: bool, eval_interval: int, warmup: int | None = None) -> TrainConfig:
    retro = isinstance(model, RetroModel)
    warmup = cfg.warmup_steps if warmup is None else warmup
    gcfg = copy.deepcopy((model.decoder if retro else model).config)
    return TrainConfig(
        model=ModelSection(kind="retro" if retro else "gpt", gpt=gcfg,
                           retro=copy.deepcopy(model.retro) if retro else retro_config(cfg)),
        data=DataSection(seq_len=seq_len, num_workers=0),
        optim=OptimSection(lr=lr, warmup_steps=min(warmup, max(steps // 5, 1)),
                           retrieval_lr_scale=cfg.retrieval_lr_scale if retro else 1.0),
        train=TrainSection(steps=steps, batch_size=batch_size, seed=cfg.seed, device=cfg.device, distributed="none",
                           eval_interval=eval_interval, eval_batches=cfg.eval_batches, log_interval=5,
                           ckpt_interval=max(steps // 4, 10), keep_last_n=1, out_dir=str(run_dir), resume="auto",
                           progress=progress, plot=True),
    )


def run_phase(cfg: DemoConfig, model: nn.Module, train_data: Any, val_data: dict[str, Any], run_dir: Path,
              out_model: Path, *, steps: int, lr: float, progress: bool, sft: bool = False,
              warmup: int | None = None, seq_len: int | None = None) -> dict[str, Any]:
    """Trains ``model`` for ``steps`` (pretraining data or, with ``sft``, instruction data), saves it to
    ``out_model`` and returns the final train loss and the validation curve (step -> metrics). ``seq_len``: the
    data's sample length, when not the phase kind's default."""
    bs = cfg.sft_batch_size if sft else cfg.batch_size
    seq = seq_len or ((cfg.practice_seq_len if cfg.sft_data == "practice" else cfg.sft_seq_len) if sft
                      else cfg.seq_len)
    tc = _train_config(cfg, model, run_dir, steps=steps, lr=lr, batch_size=bs, seq_len=seq, progress=progress,
                       eval_interval=0 if sft else cfg.eval_interval, warmup=warmup)
    if sft:
        tc.sft = SFTSection(gate_off=True, answer_only=cfg.sft_data != "practice", retrieval_on=False)
    res = train(tc, model=model, train_data=train_data, val_data=val_data, sft=sft)
    save(res.model, out_model)
    return {"steps": res.step, "final_loss": res.losses.get(res.step), "curve": val_curve(run_dir),
            "val": res.val, "model": str(out_model)}


def val_curve(run_dir: Path) -> list[dict[str, Any]]:
    """Validation records of a run (``metrics.jsonl``): step and every val/... value."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [{k: v for k, v in r.items() if k == "step" or k.startswith("val/")}
            for r in read_metrics(path) if r.get("kind") == "val"]


def new_gpt(cfg: DemoConfig, vocab_size: int) -> GPT:
    import torch

    torch.manual_seed(cfg.seed)
    return GPT(gpt_config(cfg, vocab_size))


def retrofit(gpt_path: Path, cfg: DemoConfig) -> RetroModel:
    """Retro from the pretrained GPT: fresh encoder + CCA (outputs start at zero), nothing frozen (InstructRetro)."""
    import torch

    torch.manual_seed(cfg.seed + 1)
    gpt = load(gpt_path)
    return RetroModel.from_gpt(gpt, retro_config(cfg), freeze_decoder=False)


def sft_data(path: Path, tokenizer: Path, cfg: DemoConfig) -> SFTDataset:
    """The instruction-tuning rows; practice conversations carry a loss on every answer, not only the last."""
    practice = cfg.sft_data == "practice"
    return SFTDataset(str(path), str(tokenizer), seq_len=cfg.practice_seq_len if practice else cfg.sft_seq_len,
                      all_turns=practice)
