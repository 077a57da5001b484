"""The training loop: pretraining (GPT / Retro), retro-fitting from a GPT, instruction tuning (``sft``).

    from pyretro.train import load_config, train
    result = train(load_config("configs/retro_tiny.toml", ["--train.steps=200"]))
    result.losses[200], result.val, result.checkpoint

One optimizer step = ``optim.grad_accum`` micro-batches on each of ``world`` processes, together exactly
``train.batch_size`` samples (the same samples, in the same order, for any split). The loss is the mean
next-token cross-entropy over all target tokens of the global batch (token-weighted across micro-batches
and ranks), so a 2-process run reproduces a 1-process run to float tolerance. Resuming from a checkpoint
restores model, optimizer, scheduler, RNG states and the data position: the losses continue exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyretro.errors import ConfigError, MismatchError, PyretroError
from pyretro.model import GPT, RetroModel
from pyretro.store import ChunkStore
from pyretro.train import dist as D
from pyretro.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from pyretro.train.config import TrainConfig
from pyretro.train.logs import MetricsLogger, Progress, plot_losses
from pyretro.train.models import (
    apply_activation_checkpointing,
    build_model,
    check_vocab,
    prepare_sft,
    resolve_model_file,
    sync_model_config,
)
from pyretro.train.optim import build_optimizer, build_scheduler


class NonFiniteLossError(PyretroError, ValueError):
    """The loss (or gradient norm) became NaN/inf; the run stopped without updating the weights."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps completed in total (including those before a resume)
    losses: dict[int, float] = field(default_factory=dict)  # step (1-based) -> train loss, steps run here
    val: dict[str, float] = field(default_factory=dict)  # the last validation metrics ("val/<name>/loss", ...)
    checkpoint: Path | None = None  # the last checkpoint written (or resumed from)
    model: nn.Module | None = None  # the trained GPT / RetroModel (unwrapped; sharded in place under FSDP)
    resumed_from: Path | None = None
    config: TrainConfig | None = None  # the config as run (model sections = the architecture trained)


StepCallback = Callable[[int, dict[str, float]], None]


# ---------------------------------------------------------------------------------------------- helpers
def token_loss_sum(logits: Tensor, tokens: Tensor, loss_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(sum of next-token cross-entropies over the counted targets, their number). ``lm_loss`` = sum / n."""
    targets = tokens[:, 1:]
    if loss_mask is not None:
        targets = targets.masked_fill(~loss_mask[:, 1:].bool(), -100)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    s = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100, reduction="sum")
    return s, (targets != -100).sum()


def _target_count(batch: dict[str, Tensor]) -> int:
    m = batch.get("loss_mask")
    S = batch["tokens"].shape[1]
    return int(m[:, 1:].sum()) if m is not None else batch["tokens"].shape[0] * (S - 1)


def forward(model: nn.Module, batch: dict[str, Tensor], *, retro: bool, retrieval: bool = True) -> Tensor:
    """Logits of a batch (batch contract): Retro gets the neighbours, GPT only the tokens."""
    if retro:
        return model(batch["tokens"], batch.get("neighbors"), batch.get("neighbor_mask"), retrieval=retrieval)
    return model(batch["tokens"])


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _autocast(device: torch.device, dtype: str):
    if device.type == "cuda" and dtype in ("auto", "bfloat16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (1 << 32))  # noqa: NPY002 (the global stream user code draws from)
    torch.manual_seed(seed)


def _check_out_dir(path: Path) -> None:
    """Clear error now rather than a crash at the first checkpoint."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test_{id(path)}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"train.out_dir={str(path)!r} is not writable: {e.strerror or e}") from e


def _as_val_sets(val_data: Any) -> dict[str, Any]:
    if val_data is None:
        return {}
    if isinstance(val_data, dict):
        return dict(val_data)
    return {"val": val_data}


def _check_data(model: nn.Module, ds: Any, name: str, cfg: TrainConfig) -> None:
    """Shape / vocabulary checks on the first sample, before any training step."""
    try:
        n = len(ds)
    except TypeError as e:
        raise TypeError(f"{name}: datasets must be map-style (__len__ / __getitem__), got {type(ds).__name__}") from e
    if n == 0:
        raise ConfigError(f"{name}: the dataset is empty")
    item = ds[0]
    if not isinstance(item, dict) or "tokens" not in item:
        raise TypeError(f"{name}: items must be dicts with 'tokens' (batch contract), got {type(item).__name__}")
    tok = item["tokens"]
    vocab = (model.decoder if isinstance(model, RetroModel) else model).config.vocab_size
    if tok.dim() != 1:
        raise ValueError(f"{name}: item 'tokens' must be 1-D [seq_len], got shape {list(tok.shape)}")
    if tok.numel() and int(tok.max()) >= vocab:
        raise MismatchError(f"{name}: token id {int(tok.max())} >= the model's vocab_size {vocab} (another tokenizer?)")
    if "loss_mask" in item and item["loss_mask"].shape != tok.shape:
        raise ValueError(f"{name}: loss_mask shape {list(item['loss_mask'].shape)} != tokens {list(tok.shape)}")
    vs = getattr(ds, "check_vocab", None)
    if callable(vs):
        vs(vocab)
    if isinstance(model, RetroModel) and float(model.gate) != 0.0:  # gate 0: the decoder alone
        m = model.retro.chunk_len
        if tok.shape[0] % m:
            raise ConfigError(f"{name}: seq_len {tok.shape[0]} is not a multiple of the model's chunk_len {m}")
        nb = item.get("neighbors")
        if nb is None and any(p.requires_grad for p in model.encoder.parameters()):
            raise ConfigError(f"{name}: a Retro model with a trainable retrieval path needs neighbours in its data "
                              "([data] train_neighbors: one neighbour table per store), or train kind = \"gpt\"")
        if nb is not None:
            L = tok.shape[0] // m
            dc = getattr(ds, "chunk_len", None)
            if isinstance(dc, int) and dc != m:
                raise MismatchError(f"{name}: the data's chunk_len {dc} is not the model's chunk_len {m} (its "
                                    "neighbour rows would be read against the wrong chunks)")
            if nb.dim() != 3 or not L <= nb.shape[0] <= -(-tok.shape[0] // m):
                raise MismatchError(f"{name}: neighbors must be [L={L}, K, r] (seq_len // the model's chunk_len "
                                    f"{m}), got {list(nb.shape)}")
            if nb.numel() and int(nb.max()) >= vocab:
                raise MismatchError(f"{name}: neighbour token id {int(nb.max())} >= the model's vocab_size {vocab}")
            if nb.shape[-1] != model.retro.r:
                warnings.warn(f"{name}: neighbours have r={nb.shape[-1]} tokens, the model was configured with "
                              f"r={model.retro.r}", UserWarning, stacklevel=3)


def _check_tokenizer(cfg: TrainConfig, model: nn.Module) -> None:
    if not cfg.data.tokenizer:
        return
    from pyretro.data.tokenizer import load_tokenizer, vocab_size

    try:
        tok = load_tokenizer(cfg.data.tokenizer)
    except (OSError, ValueError, Exception) as e:
        raise ConfigError(f"data.tokenizer={cfg.data.tokenizer!r}: cannot load it ({e})") from e
    check_vocab(model, vocab_size(tok), f"data.tokenizer {cfg.data.tokenizer}")


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, *, retro: bool, batch_size: int, max_batches: int = 0,
             retrieval: bool = True, device: torch.device | None = None, dtype: str = "auto",
             info: D.DistInfo | None = None) -> dict[str, float]:
    """Token-weighted validation loss and perplexity over the first ``max_batches * batch_size * world``
    samples in order (0 = all; with several ranks, all whole global batches); every rank evaluates its share,
    results are summed over ranks."""
    from pyretro.train.data import make_loader

    info = info or D.DistInfo()
    device = device or next(model.parameters()).device
    n = len(dataset)
    per_rank = n // info.world
    if per_rank == 0:
        return {}
    bs = min(batch_size, per_rank)
    # one process: every sample (a short last batch); several: whole global batches only, so every rank runs
    # the same number of forwards (FSDP gathers weights collectively in each)
    loader = make_loader(dataset, bs, seed=0, rank=info.rank, world_size=info.world, shuffle=False,
                         drop_last=info.world > 1)
    was_training = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=device)
    # validation must not move the training RNG streams (an exact resume depends on them)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            for i, batch in enumerate(loader):
                if max_batches and i >= max_batches:
                    break
                batch = _to_device(batch, device)
                with _autocast(device, dtype):
                    logits = forward(model, batch, retro=retro, retrieval=retrieval)
                s, c = token_loss_sum(logits, batch["tokens"], batch.get("loss_mask"))
                tot[0] += s.double()
                tot[1] += c
        finally:
            model.train(was_training)
    D.all_reduce_sum(tot, info)
    loss = float(tot[0] / tot[1]) if tot[1] > 0 else float("nan")
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf"), "tokens": float(tot[1])}


# ---------------------------------------------------------------------------------------------- data
def build_datasets(cfg: TrainConfig, model: nn.Module, *, sft: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train dataset and named validation datasets from ``[data]`` (TRAIN-DATA's classes)."""
    if sft:
        from pyretro.train.sft import build_sft_datasets

        return build_sft_datasets(cfg, model)
    from pyretro.train.data import BlendedDataset, RetroDataset

    d = cfg.data
    retro = isinstance(model, RetroModel)
    vocab = (model.decoder if retro else model).config.vocab_size

    opened: dict[str, ChunkStore] = {}

    def in_memory_db(path: str) -> ChunkStore:  # one RAM copy shared by every dataset that reads it
        if path not in opened:
            opened[path] = ChunkStore.open(path, in_memory=True)
        return opened[path]

    def one(store: str, table: str | None, what: str) -> Any:
        if retro and table is None:
            raise ConfigError(f"{what}: a Retro model needs a neighbour table per store "
                              f"(data.{what.split('[')[0]}_neighbors)")
        kw: dict[str, Any] = {}
        if retro:
            db = in_memory_db(d.db or store) if d.db_in_memory else d.db
            kw = {"db_store": db, "k": model.retro.num_neighbors, "r": model.retro.r}
        return RetroDataset(store, table if retro else None, seq_len=d.seq_len, vocab_size=vocab, **kw)

    if not d.train:
        raise ConfigError("data.train: no training store given (or pass train_data= to train())")
    parts = [one(s, d.train_neighbors[i] if d.train_neighbors else None, f"train[{i}]")
             for i, s in enumerate(d.train)]
    if len(parts) == 1:
        train_ds = parts[0]
    else:
        weights = d.weights if d.weights is not None else [float(len(p)) for p in parts]
        train_ds = BlendedDataset(parts, weights, seed=cfg.train.seed)
    vals: dict[str, Any] = {}
    for i, s in enumerate(d.val):
        name = Path(s).name or f"val{i}"
        if name in vals:
            name = f"{name}_{i}"
        vals[name] = one(s, d.val_neighbors[i] if d.val_neighbors else None, f"val[{i}]")
    return train_ds, vals


# ---------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, *, model: nn.Module | None = None, train_data: Any = None, val_data: Any = None,
          sft: bool = False, on_step: StepCallback | None = None) -> TrainResult:
    """Runs (or resumes) a training run described by ``cfg``; see the module docstring.

    ``model``: a GPT / RetroModel to train (default: built from ``[model]``, or from the checkpoint when
    resuming). ``train_data`` / ``val_data``: map-style datasets following the batch contract (``val_data``
    may be a dict name -> dataset); default: built from ``[data]``. ``sft=True``: instruction tuning
    (``[sft]`` settings; :func:`pyretro.train.sft.sft` is the same). ``on_step(step, metrics)`` runs on
    every rank after each optimizer step. Raises ``NonFiniteLossError`` when the loss becomes NaN/inf (the
    last good checkpoint stays the latest), ``ConfigError`` / ``MismatchError`` on bad input before training.
    """
    cfg = copy.deepcopy(cfg)  # the run records the architecture actually trained; the caller's object stays
    t = cfg.train
    info, device = D.setup(t.distributed, t.device)
    result = _train(cfg, info, device, model, train_data, val_data, sft, on_step)
    D.teardown(info)  # (not after an error: a rank that failed alone must not wait in a barrier)
    return result


def _train(cfg: TrainConfig, info: D.DistInfo, device: torch.device, model: nn.Module | None, train_data: Any,
           val_data: Any, sft: bool, on_step: StepCallback | None) -> TrainResult:
    t, o = cfg.train, cfg.optim
    if device.type != "cuda" and t.dtype == "bfloat16":
        raise ConfigError("train.dtype='bfloat16': bf16 autocast is used on CUDA only; use 'auto' or 'float32' on CPU")
    per_step = info.world * o.grad_accum
    if t.batch_size % per_step:
        raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by world_size ({info.world}) x "
                          f"optim.grad_accum ({o.grad_accum})")
    micro = t.batch_size // per_step
    run_dir = Path(t.out_dir)
    ckpt_root = run_dir / "checkpoints"
    from pyretro.retrieval.dist import on_rank0

    on_rank0(_check_out_dir, run_dir)  # every rank raises rank 0's error instead of hanging

    # ---- where to start
    resume_from: Path | None = None
    if t.resume == "auto":
        resume_from = latest_checkpoint(ckpt_root)
    elif t.resume == "never":
        if latest_checkpoint(ckpt_root) is not None:
            raise ConfigError(f"train.resume='never' but {ckpt_root} already holds checkpoints: use another "
                              "train.out_dir, delete them, or resume (train.resume=auto)")
    else:
        resume_from = latest_checkpoint(t.resume)
        if resume_from is None:
            raise FileNotFoundError(f"train.resume={t.resume!r}: no checkpoint there")

    # ---- model
    _seed_all(t.seed)
    if model is None:
        if resume_from is not None:
            from pyretro.model.io import load

            model = load(resolve_model_file(resume_from))
            if cfg.model.freeze_decoder and isinstance(model, RetroModel):
                model.decoder.requires_grad_(False)
        else:
            model = build_model(cfg.model)
    if not isinstance(model, (GPT, RetroModel)):
        raise TypeError(f"model must be a pyretro GPT or RetroModel, got {type(model).__name__}")
    if sft:
        prepare_sft(model, cfg.sft)
    sync_model_config(cfg.model, model)
    retro = isinstance(model, RetroModel)
    if retro and float(model.gate) != 0.0 and cfg.data.seq_len % model.retro.chunk_len:  # gate 0: any length
        raise ConfigError(f"data.seq_len={cfg.data.seq_len} is not a multiple of the model's chunk_len="
                          f"{model.retro.chunk_len} (Retro samples are whole chunks)")
    _check_tokenizer(cfg, model)

    # ---- data (checked before anything heavy happens)
    if train_data is None:
        train_data, built_vals = build_datasets(cfg, model, sft=sft)
        if val_data is None:
            val_data = built_vals
    val_sets = _as_val_sets(val_data)
    _check_data(model, train_data, "train data", cfg)
    for name, ds in val_sets.items():
        _check_data(model, ds, f"validation set {name!r}", cfg)
    if len(train_data) < t.batch_size:
        raise ConfigError(f"train data: {len(train_data)} samples, fewer than one global batch "
                          f"(train.batch_size={t.batch_size})")

    # ---- device, wrappers, optimizer
    model.to(device)
    if t.activation_checkpointing:
        apply_activation_checkpointing(model)
    core = model  # the GPT / RetroModel (FSDP2 shards it in place)
    wrapped = D.wrap(core, info, device)
    fwd_model = torch.compile(wrapped, backend=t.compile_backend) if t.compile else wrapped
    optimizer = build_optimizer(core, o)
    scheduler = build_scheduler(optimizer, o, t.steps)

    start_step = 0
    trainer_state: dict[str, Any] = {}
    if resume_from is not None:
        trainer_state = load_checkpoint(resume_from, core, optimizer, scheduler, rank=info.rank, restore_rng=False)
        start_step = int(trainer_state["step"])

    if info.is_main:
        cfg.save(run_dir / "config.json")
    logger = MetricsLogger(run_dir, tensorboard=t.tensorboard, enabled=info.is_main,
                           resume_step=start_step if resume_from is not None else None)
    result = TrainResult(run_dir=run_dir, step=start_step, checkpoint=resume_from, resumed_from=resume_from,
                         model=core, config=cfg)
    if start_step >= t.steps:
        logger.close()
        return result

    from pyretro.train.data import make_loader

    # samples consumed so far (all ranks); saved, so a resume with another batch size continues the order
    consumed = int(trainer_state.get("data", {}).get("consumed", start_step * t.batch_size))
    loader = make_loader(train_data, micro, seed=t.seed, rank=info.rank, world_size=info.world, shuffle=True,
                         drop_last=True, infinite=True, num_workers=cfg.data.num_workers,
                         pin_memory=cfg.data.pin_memory and device.type == "cuda",
                         prefetch_factor=cfg.data.prefetch_factor)
    epoch, start = loader.sampler.locate(consumed)
    loader.sampler.set_epoch(epoch, start)
    it = iter(loader)  # draws a base seed from torch's RNG: before the RNG streams are (re)set
    rngs = trainer_state.get("rng") or []
    if resume_from is not None and info.rank < len(rngs):
        set_rng_state(rngs[info.rank])
    else:  # per-rank streams (dropout); the model was initialised from the shared seed
        _seed_all(t.seed + 7919 * info.rank)
    params = [p for p in core.parameters() if p.requires_grad]
    clip = o.grad_clip if o.grad_clip > 0 else float("inf")
    progress = Progress(t.steps, start_step, enabled=t.progress and info.is_main, desc="sft" if sft else "train")
    config_dict = cfg.to_dict()

    def checkpoint(step: int) -> Path:
        return save_checkpoint(ckpt_root, step, core, optimizer, scheduler,
                               data_state={"consumed": consumed + (step - start_step) * t.batch_size,
                                           "batch_size": t.batch_size,
                                           "micro_batch": micro, "world": info.world, "seed": t.seed},
                               config=config_dict, keep_last_n=t.keep_last_n, rank=info.rank, world=info.world)

    def validate(step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        variants = [("", True)]
        if retro and float(core.gate) != 0.0:
            variants.append(("/no_retrieval", False))
        for name, ds in val_sets.items():
            for suffix, retrieval in variants:
                r = evaluate(fwd_model, ds, retro=retro, batch_size=micro, max_batches=t.eval_batches,
                             retrieval=retrieval, device=device, dtype=t.dtype, info=info)
                for k, v in r.items():
                    out[f"val/{name}{suffix}/{k}"] = v
        if out:
            logger.log({"kind": "val", "step": step, **out})
            progress.write("  ".join(f"{k}={v:.4g}" for k, v in out.items() if k.endswith(("loss", "ppl"))))
        return out

    fwd_model.train()
    try:
        for step in range(start_step, t.steps):
            t0 = time.perf_counter()
            batches = [next(it) for _ in range(o.grad_accum)]
            counts = torch.tensor([float(sum(_target_count(b) for b in batches)),
                                   float(sum(b["tokens"].numel() for b in batches))], dtype=torch.float64,
                                  device=device)  # NCCL reduces device tensors only
            D.all_reduce_sum(counts, info)
            n_targets = max(1.0, float(counts[0]))
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            for i, b in enumerate(batches):
                b = _to_device(b, device)
                last = i == len(batches) - 1
                with _no_sync(wrapped, info, last):
                    with _autocast(device, t.dtype):
                        logits = forward(fwd_model, b, retro=retro)
                        s, _ = token_loss_sum(logits, b["tokens"], b.get("loss_mask"))
                    # DDP / FSDP average gradients over ranks: scale so the result is d(global mean)/dw
                    (s * (info.world / n_targets)).backward()
                loss_sum += s.detach().double()
            D.all_reduce_sum(loss_sum, info)
            loss = float(loss_sum) / n_targets
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
                grad_norm = grad_norm.full_tensor()
            grad_norm = float(grad_norm)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                good = latest_checkpoint(ckpt_root)
                raise NonFiniteLossError(
                    f"step {step + 1}: the training loss is {loss} (grad norm {grad_norm}); stopped without "
                    f"updating the weights. Last good checkpoint: {good or 'none'}. Lower optim.lr, check the "
                    f"data, or resume from it (train.resume=auto).")
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            result.losses[done] = loss
            result.step = done
            tok_s = float(counts[1]) / max(time.perf_counter() - t0, 1e-9)  # data wait included
            progress.update(loss, tok_s, lr)
            metrics = {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s}
            if done % t.log_interval == 0 or done == t.steps or done == start_step + 1:
                logger.log({"kind": "train", "step": done, **metrics})
            if (t.eval_interval and done % t.eval_interval == 0) or done == t.steps:
                if val_sets:
                    result.val = validate(done)
                    metrics.update(result.val)
            if (t.ckpt_interval and done % t.ckpt_interval == 0) or done == t.steps:
                result.checkpoint = checkpoint(done)
            if on_step is not None:
                on_step(done, metrics)
    finally:
        progress.close()
        logger.close()
    if info.is_main and t.plot:
        try:
            plot_losses(logger.path, run_dir / "loss.png")
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
            warnings.warn(f"loss plot not written: {e}", UserWarning, stacklevel=2)
    return result


def _no_sync(wrapped: nn.Module, info: D.DistInfo, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if last or info.world == 1:
        return contextlib.nullcontext()
    if info.mode == "ddp":
        return wrapped.no_sync()
    if info.mode == "fsdp" and hasattr(wrapped, "set_requires_gradient_sync"):
        return _fsdp_no_sync(wrapped)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


__all__ = ["NonFiniteLossError", "TrainResult", "build_datasets", "evaluate", "forward", "token_loss_sum", "train"]
