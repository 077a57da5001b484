"""safetensors save/load of pyretro models together with their configs.

File: one ``.safetensors`` whose metadata holds ``pyretro_kind`` ("gpt" | "retro"), ``gpt_config`` and
``retro_config`` (JSON). Tied weights are stored once (``lm_head.weight`` is dropped when tied).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from pyretro._version import __version__
from pyretro.errors import MismatchError
from pyretro.model.config import GPTConfig, RetroConfig
from pyretro.model.gpt import GPT
from pyretro.model.retro import RetroModel


def _tied_keys(model: nn.Module) -> set[str]:
    cfg: GPTConfig = model.config
    if not cfg.tie_embeddings:
        return set()
    return {"decoder.lm_head.weight"} if isinstance(model, RetroModel) else {"lm_head.weight"}


def load_state_checked(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict with every missing/unexpected key and shape mismatch listed in one clear error."""
    expected = {k: v for k, v in model.state_dict().items() if k not in _tied_keys(model)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [f"{k}: file {list(state[k].shape)} != model {list(expected[k].shape)}"
           for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if bad:
            parts.append("shape mismatch " + "; ".join(bad[:8]))
        raise MismatchError(f"{source}: weights do not fit the model config: " + ", ".join(parts))
    model.load_state_dict(state, strict=False)


def save(model: GPT | RetroModel, path: str | os.PathLike) -> None:
    """Writes weights + config atomically (temp file + rename)."""
    path = Path(path)
    is_retro = isinstance(model, RetroModel)
    meta = {
        "pyretro_kind": "retro" if is_retro else "gpt",
        "pyretro_version": __version__,
        "gpt_config": json.dumps(model.config.to_dict()),
    }
    if is_retro:
        meta["retro_config"] = json.dumps(model.retro.to_dict())
    tied = _tied_keys(model)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> GPT | RetroModel:
    """Rebuilds the model saved by :func:`save` (GPT or RetroModel) and loads its weights, strictly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types
        raise MismatchError(f"{path}: not a readable safetensors file ({e})") from e
    kind = meta.get("pyretro_kind")
    if kind not in ("gpt", "retro") or "gpt_config" not in meta:
        raise MismatchError(f"{path}: no pyretro model metadata (pyretro_kind/gpt_config); was it written by "
                            "pyretro.model.save?")
    gcfg = GPTConfig.from_dict(json.loads(meta["gpt_config"]))
    if kind == "retro":
        model: GPT | RetroModel = RetroModel(gcfg, RetroConfig.from_dict(json.loads(meta["retro_config"])))
    else:
        model = GPT(gcfg)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtype=dtypes.pop())
    model.to(device)
    load_state_checked(model, state, source=str(path))
    return model
