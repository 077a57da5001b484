"""torch.distributed helpers: rank/world (1 process when not launched distributed), barrier, init."""

from __future__ import annotations

import os


def _dist():
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a core dependency
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def rank_world() -> tuple[int, int]:
    d = _dist()
    return (d.get_rank(), d.get_world_size()) if d else (0, 1)


def barrier() -> None:
    d = _dist()
    if d is not None and d.get_world_size() > 1:
        d.barrier()


def maybe_init_from_env() -> bool:
    """Initializes the default process group when launched by torchrun (WORLD_SIZE > 1); True if it did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        return False
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def my_blocks(num_blocks: int) -> range:
    """Blocks of this rank: round-robin, so a resumed run with another world size still covers all."""
    rank, world = rank_world()
    return range(rank, num_blocks, world)


def on_rank0(fn, *args, **kwargs):
    """Runs ``fn`` on rank 0 only; every rank then raises rank 0's error (if any) instead of hanging in a
    barrier. Returns fn's result on rank 0, None elsewhere."""
    rank, world = rank_world()
    result, error = None, None
    if rank == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised below on every rank
            error = e
    if world > 1:
        import torch.distributed as dist

        box = [None if error is None else (type(error), str(error))]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            etype, msg = box[0]
            try:
                error = etype(msg)
            except Exception:  # noqa: BLE001 - an exception type that needs other arguments
                error = RuntimeError(f"rank 0: {etype.__name__}: {msg}")
    if error is not None:
        raise error
    return result
