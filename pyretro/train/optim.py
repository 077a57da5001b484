"""AdamW with decoupled weight decay on matrices only, and linear warmup + cosine decay to a floor."""

from __future__ import annotations

import math

import torch
from torch import nn

from pyretro.train.config import OptimSection


def lr_factor(step: int, warmup_steps: int, decay_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak LR before optimizer step ``step`` (0-based): linear warmup from 1/warmup to 1,
    then a half cosine over ``decay_steps`` down to ``min_ratio``, then flat at ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, decay_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _fused_ok(params: list[nn.Parameter], want: bool | None) -> bool:
    """Fused AdamW runs on CUDA (and other accelerators) for float params; foreach elsewhere."""
    devices = {p.device.type for p in params}
    supported = devices <= {"cuda", "xpu", "mps", "hpu"} and all(p.is_floating_point() for p in params)
    if want and not supported:
        return False  # asked for but impossible here: fall back rather than fail the run
    return supported if want is None else bool(want)


def _is_retrieval_param(name: str) -> bool:
    """Encoder / CCA parameters of a RetroModel (names as ``named_parameters`` gives them, wrappers included)."""
    parts = name.split(".")
    return "encoder" in parts or "cca" in parts


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on vectors (norm scales, biases, the gate) nor on CCA
    position biases; Retro's encoder + CCA parameters at ``cfg.retrieval_lr_scale`` times the LR (their groups
    carry ``lr_scale``)."""
    if cfg.retrieval_lr_scale <= 0:
        raise ValueError(f"optim.retrieval_lr_scale must be > 0, got {cfg.retrieval_lr_scale}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (everything frozen?)")
    buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for n, p in named:
        scale = cfg.retrieval_lr_scale if _is_retrieval_param(n) else 1.0
        # decay matrices only: not norm scales, biases, the gate, nor CCA position-bias tables (a decayed bias
        # would drift back to "no position preference" whatever the data says)
        buckets.setdefault((scale, p.dim() >= 2 and not n.endswith("pos_bias")), []).append(p)
    groups = [{"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0, "lr": cfg.lr * scale,
               "lr_scale": scale}
              for (scale, decay), ps in sorted(buckets.items(), key=lambda kv: (kv[0][0] != 1.0, not kv[0][1]))]
    params = [p for _, p in named]
    fused = _fused_ok(params, cfg.fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             fused=fused or None, foreach=None if fused else True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimSection, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    decay = cfg.decay_steps if cfg.decay_steps is not None else max(1, total_steps - cfg.warmup_steps)
    w, r = cfg.warmup_steps, cfg.min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, w, decay, r))


__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]
