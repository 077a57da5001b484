"""2 gloo processes on CPU (DDP and FSDP2) reproduce a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _train_fixtures import PatternDataset, one_thread, tiny_config  # noqa: F401 (autouse fixture)

from pyretro.model.io import load
from pyretro.train.loop import train

STEPS = 2
RUN = dict(train__steps=STEPS, train__batch_size=8, train__ckpt_interval=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    # what torchrun sets; pyretro.train.dist.setup joins the group from these
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    results = {}
    # DDP with accumulation (no_sync); FSDP2 with accumulation and activation checkpointing (the big-model setup)
    # FSDP2 stops after step 1 and resumes from its checkpoint for step 2
    for mode, ac in (("ddp", False), ("fsdp", True)):
        losses = {}
        for steps in ((STEPS,) if mode == "ddp" else (STEPS - 1, STEPS)):
            cfg = tiny_config(f"{out}/{mode}", "retro", train__distributed=mode, optim__grad_accum=2,
                              train__activation_checkpointing=ac, **{**RUN, "train__steps": steps,
                                                                     "optim__decay_steps": STEPS})
            res = train(cfg, train_data=PatternDataset(32, half_mask=True), val_data=PatternDataset(8, seed=4))
            losses.update(res.losses)
        results[mode] = {"losses": losses, "val": res.val["val/val/loss"], "checkpoint": str(res.checkpoint),
                         "resumed": str(res.resumed_from)}
    if rank == 0:
        with open(f"{out}/results.json", "w") as f:
            json.dump(results, f)


@pytest.mark.slow  # two spawned processes (~15 s idle)
def test_ddp_and_fsdp2_match_single_process(tmp_path):
    single = train(tiny_config(tmp_path / "single", "retro", optim__decay_steps=STEPS, **RUN),
                   train_data=PatternDataset(32, half_mask=True), val_data=PatternDataset(8, seed=4))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = json.loads((tmp_path / "results.json").read_text())
    ref = [single.losses[s] for s in range(1, STEPS + 1)]
    assert results["fsdp"]["resumed"].endswith(f"step_{STEPS - 1:08d}")
    for mode in ("ddp", "fsdp"):
        got = [results[mode]["losses"][str(s)] for s in range(1, STEPS + 1)]
        np.testing.assert_allclose(got, ref, rtol=2e-5, err_msg=mode)
        assert results[mode]["val"] == pytest.approx(single.val["val/val/loss"], rel=2e-5)
        # the (gathered, unsharded) checkpoint equals the single-process weights
        model = load(os.path.join(results[mode]["checkpoint"], "model.safetensors"))
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, single.model.state_dict()[k], rtol=1e-4, atol=2e-6, msg=f"{mode} {k}")
