"""Distributed training under ``torchrun``: process group, device, DDP or FSDP2 (``fully_shard``) wrapping.

One process per device. ``train.distributed = "auto"`` picks DDP when WORLD_SIZE > 1. The global batch
(``train.batch_size``) is split evenly over ranks and gradient-accumulation micro-steps, so a run gives the
same losses (to float tolerance) for any world size with the same global batch.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pyretro.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mode: str = "none"  # "none" | "ddp" | "fsdp"
    initialized_here: bool = False  # we created the process group (destroyed at process exit)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec!r}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev


def setup(mode: str, device_spec: str) -> tuple[DistInfo, torch.device]:
    """Joins the process group when launched by torchrun (or one already exists) and picks the device."""
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if mode != "none" and world_env > 1 and not dist.is_initialized():
        backend = "nccl" if device_spec != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        # kept for later train() calls in this process (re-creating a group on the same MASTER_PORT can hang)
        atexit.register(_destroy)
        created = True
    if dist.is_available() and dist.is_initialized() and mode != "none":
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if mode == "auto":
        mode = "ddp" if world > 1 else "none"
    if world == 1 and mode in ("ddp", "fsdp"):
        mode = "none" if mode == "ddp" else mode  # FSDP2 on one process still works (a single shard)
    device = resolve_device(device_spec, local_rank)
    return DistInfo(rank, world, local_rank, mode, created), device


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP / FSDP2 around ``model`` (already on ``device``). FSDP2 shards in place (see _shard_units)."""
    if info.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # frozen decoder (RETRO-fitting) leaves parameters without grads in some steps: fine for DDP only
        # when they never require grad, which is the case (requires_grad_(False)).
        return DDP(model, device_ids=ids)
    if info.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in _shard_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model
    return model


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """Modules always entered through ``__call__`` (FSDP2 gathers a unit's weights in its forward hook):
    every attention and MLP (decoder and encoder; their checkpoint wrappers when wrapped) and the CCA
    projections. Decoder blocks cannot be units: RetroModel calls their ``self_attention`` /
    ``feed_forward`` methods directly. Norms and embeddings stay with the root unit."""
    from pyretro.model.cca import ChunkedCrossAttention
    from pyretro.model.layers import MLP, Attention

    units: list[nn.Module] = []
    inside_wrapper: set[int] = set()
    for m in model.modules():
        inner = getattr(m, "_checkpoint_wrapped_module", None)
        if inner is not None:
            inside_wrapper.add(id(inner))
        target = inner if inner is not None else m
        if id(m) in inside_wrapper:
            continue
        if isinstance(target, (Attention, MLP)):
            units.append(m)
        elif isinstance(target, ChunkedCrossAttention):
            units += [target.q, target.kv, target.o]
    return units


def unwrap(model: nn.Module) -> nn.Module:
    """The GPT / RetroModel inside DDP or torch.compile wrappers (FSDP2 shards in place: no wrapper)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or not isinstance(inner, nn.Module):
            return model
        model = inner


def rank_is_main() -> bool:
    """Rank 0 of a torchrun launch (or a single process), also after the process group is gone."""
    return int(os.environ.get("RANK", "0")) == 0


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """Waits for every rank; the process group itself lives until the process exits."""
    if info.world > 1 and dist.is_initialized():
        dist.barrier()


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DistInfo", "all_reduce_sum", "barrier", "rank_is_main", "resolve_device", "setup", "teardown", "unwrap",
           "wrap"]
