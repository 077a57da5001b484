"""Training checkpoints: atomic directories, keep-last-N, a ``latest`` pointer, exact resume.

Layout of ``<out_dir>/checkpoints/``::

    step_00000500/
        model.safetensors   weights + model configs (``pyretro.model.io.load`` opens it)
        optimizer.pt        full (unsharded) AdamW state keyed by parameter name
        trainer.pt          step, scheduler, data position, RNG states of every rank, metrics
        config.json         the TrainConfig of the run
    latest                  text: the name of the newest complete checkpoint

A checkpoint is written into a hidden temp directory and renamed into place, then ``latest`` is replaced
(temp file + rename): a kill at any moment leaves the previous checkpoint intact and pointed to.
States go through ``torch.distributed.checkpoint.state_dict`` so the same files serve one process,
DDP and FSDP2 (full state dicts gathered to rank 0), and a run may resume with another world size.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from pyretro._version import __version__
from pyretro.errors import MismatchError
from pyretro.model.retro import RetroModel

LATEST = "latest"
MODEL_FILE = "model.safetensors"


def _full() -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _tied_key(model: nn.Module) -> tuple[str, str] | None:
    """(dropped key, its source) when the LM head shares the token embedding."""
    if not model.config.tie_embeddings:
        return None
    p = "decoder." if isinstance(model, RetroModel) else ""
    return f"{p}lm_head.weight", f"{p}tok_emb.weight"


def model_metadata(model: nn.Module) -> dict[str, str]:
    """The safetensors metadata ``pyretro.model.io`` writes and reads."""
    meta = {"pyretro_kind": "retro" if isinstance(model, RetroModel) else "gpt",
            "pyretro_version": __version__, "gpt_config": json.dumps(model.config.to_dict())}
    if isinstance(model, RetroModel):
        meta["retro_config"] = json.dumps(model.retro.to_dict())
    return meta


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints (those with trainer.pt), oldest first."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.glob("step_*") if p.is_dir() and (p / "trainer.pt").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_or_ckpt_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run directory (or ``checkpoints/``), via the ``latest`` pointer."""
    root = Path(run_or_ckpt_dir)
    if (root / "trainer.pt").is_file():  # already a checkpoint directory
        return root
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    pointer = root / LATEST
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "trainer.pt").is_file():
            return cand
    ckpts = list_checkpoints(root)  # pointer missing (killed between rename and pointer update)
    return ckpts[-1] if ckpts else None


def rng_state() -> dict[str, Any]:
    # numpy's legacy global state on purpose: it is what user code and data workers draw from
    state = {"python": random.getstate(), "numpy": np.random.get_state(),  # noqa: NPY002
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_objects(obj: Any, world: int) -> list[Any]:
    if world <= 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def save_checkpoint(ckpt_root: str | os.PathLike, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, *, data_state: dict[str, Any], config: dict[str, Any],
                    keep_last_n: int = 0, extra: dict[str, Any] | None = None, rank: int = 0,
                    world: int = 1) -> Path:
    """Writes checkpoint ``step`` (collective: every rank must call it; rank 0 writes). Returns its path.

    ``model`` is the unwrapped GPT / RetroModel (FSDP2-sharded in place or not), never the DDP wrapper.
    """
    root = Path(ckpt_root)
    msd = get_model_state_dict(model, options=_full())
    osd = get_optimizer_state_dict(model, optimizer, options=_full())
    rngs = _gather_objects(rng_state(), world)
    final = root / checkpoint_name(step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp_step_*"):  # half-written checkpoints of killed runs (full-size each)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp_{final.name}_{os.getpid()}"
        tmp.mkdir()
        tied = _tied_key(model)
        tensors = {k: v.detach().contiguous() for k, v in msd.items() if not (tied and k == tied[0])}
        save_file(tensors, str(tmp / MODEL_FILE), metadata=model_metadata(model))
        torch.save(osd, tmp / "optimizer.pt")
        trainer = {"step": step, "scheduler": scheduler.state_dict() if scheduler is not None else None,
                   "data": data_state, "rng": rngs, "world": world, "extra": extra or {}}
        torch.save(trainer, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if final.exists():  # a stale copy of the same step (e.g. a rerun): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        ptr = root / f".{LATEST}.tmp"
        ptr.write_text(final.name + "\n")
        os.replace(ptr, root / LATEST)
        if keep_last_n > 0:
            # count only this run's line up to ``final``: checkpoints of later steps are left from an abandoned
            # run (resumed from an older checkpoint) and must not push this run's own ones out
            mine = [c for c in list_checkpoints(root) if c.name <= final.name]
            for old in mine[:-keep_last_n]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    if world > 1:
        dist.barrier()
    return final


def read_model_state(path: Path, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights + metadata of a checkpoint's model.safetensors (tied head restored when ``model`` is given)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if model is not None:
        tied = _tied_key(model)
        if tied and tied[0] not in state and tied[1] in state:
            state[tied[0]] = state[tied[1]]
    return state, meta


def load_checkpoint(ckpt_dir: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, *, rank: int = 0, restore_rng: bool = True) -> dict[str, Any]:
    """Restores model (+ optimizer, scheduler, this rank's RNG states) in place; returns trainer.pt's dict."""
    d = Path(ckpt_dir)
    if not (d / "trainer.pt").is_file() or not (d / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{d}: not a complete training checkpoint (need trainer.pt and {MODEL_FILE})")
    state, meta = read_model_state(d / MODEL_FILE, model)
    expected = model_metadata(model)
    for key in ("pyretro_kind", "gpt_config", "retro_config"):
        got, want = meta.get(key), expected.get(key)
        if key == "retro_config":
            got, want = _strip_gate(got), _strip_gate(want)
        elif key == "gpt_config":
            got, want = json.loads(got or "null"), json.loads(want)
        if got != want:
            raise MismatchError(f"{d}: checkpoint model ({key}={meta.get(key)}) does not match the model being "
                                f"trained ({expected.get(key)})")
    dtypes = {p.dtype for p in model.parameters()}
    state = {k: v.to(next(iter(dtypes))) if v.is_floating_point() and len(dtypes) == 1 else v
             for k, v in state.items()}
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))
    trainer = torch.load(d / "trainer.pt", map_location="cpu", weights_only=False)
    if optimizer is not None:
        osd = torch.load(d / "optimizer.pt", map_location="cpu", weights_only=False)
        set_optimizer_state_dict(model, optimizer, osd, options=StateDictOptions(full_state_dict=True))
    if scheduler is not None and trainer.get("scheduler") is not None:
        scheduler.load_state_dict(trainer["scheduler"])
    rngs = trainer.get("rng") or []
    if restore_rng and rank < len(rngs):  # another world size: ranks beyond the saved ones keep their seeds
        set_rng_state(rngs[rank])
    return trainer


def _strip_gate(retro_json: str | None) -> Any:
    """The gate is a training setting (SFT sets 0), not part of the architecture."""
    if retro_json is None:
        return None
    d = json.loads(retro_json)
    d.pop("gate", None)
    d.pop("extra", None)
    return d


__all__ = [
    "checkpoint_name",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "model_metadata",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
