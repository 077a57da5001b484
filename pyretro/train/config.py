"""Training configuration: one dataclass per concern, loaded from TOML (or YAML / JSON) with
``--section.key=value`` overrides, type-checked, unknown keys rejected.

    cfg = load_config("configs/retro_tiny.toml", ["--optim.lr=1e-4", "--model.gpt.n_layers=6"])
    cfg.save(run_dir / "config.json")        # the run directory and every checkpoint keep a copy

Sections: ``[model]`` (with ``[model.gpt]`` / ``[model.retro]`` = :class:`GPTConfig` / :class:`RetroConfig`),
``[data]``, ``[optim]``, ``[train]``, ``[sft]``. Defaults follow InstructRetro / Megatron-LM where the papers
give them (AdamW 0.9/0.95, cosine to 0.1x, clip 1.0).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyretro.errors import ConfigError
from pyretro.model.config import GPTConfig, RetroConfig

MODEL_KINDS = ("gpt", "retro")
DTYPES = ("auto", "float32", "bfloat16")
DISTRIBUTED = ("auto", "none", "ddp", "fsdp")


@dataclass
class ModelSection:
    # "gpt" or "retro"; None = the kind of the init_from model, else "retro"
    kind: str | None = None
    # Start from saved weights: a .safetensors model file, a checkpoint directory or a run directory (its
    # latest checkpoint). A GPT file with kind = "retro" is retro-fitted (RetroModel.from_gpt; new encoder/CCA).
    init_from: str | None = None
    # RETRO-fitting (DeepMind): train only the encoder + CCA. False = InstructRetro (everything trains).
    freeze_decoder: bool = False
    gpt: GPTConfig = field(default_factory=GPTConfig)  # the decoder (ignored when init_from gives one)
    retro: RetroConfig = field(default_factory=RetroConfig)  # encoder + CCA (kind = "retro")


@dataclass
class DataSection:
    # Pretraining / retro-fitting: chunk stores (directories) blended with `weights` (None = by size).
    train: list[str] = field(default_factory=list)
    train_neighbors: list[str] = field(default_factory=list)  # one neighbour table per train store (Retro)
    weights: list[float] | None = None
    db: str | None = None  # the retrieval database store the neighbour ids point into (None = the train store)
    # Read the database store into RAM (huge pages) instead of mapping it: ~1.8x faster random neighbour
    # gathers (bench/RESULTS.md) for a store that fits in memory, at the cost of its size per process.
    db_in_memory: bool = False
    val: list[str] = field(default_factory=list)  # validation stores (each reported separately)
    val_neighbors: list[str] = field(default_factory=list)
    seq_len: int = 2048  # tokens per sample; a multiple of model.retro.chunk_len for Retro
    # Instruction tuning (pyretro sft): JSONL conversations / QA records (pyretro.data.chat.Conversation).
    sft_train: str | None = None
    sft_val: str | None = None
    sft_documents: str | None = None  # documents JSONL ({"id", "text"}) resolving QA records' context_ids
    tokenizer: str | None = None  # tokenizer file; its vocab must fit the model (checked before training)
    pack: bool = True  # SFT: pack short samples into seq_len rows
    num_workers: int = 2  # DataLoader worker processes (0 = load in the training process)
    pin_memory: bool = True  # only used on CUDA
    prefetch_factor: int = 4


@dataclass
class OptimSection:
    lr: float = 3e-4  # peak learning rate (InstructRetro retro-fitting: 2e-5 small .. 9e-6 43B; SFT 5e-6)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio and stays there
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1  # on matrices only (not norms / biases)
    warmup_steps: int = 100  # linear warmup from 0
    decay_steps: int | None = None  # cosine length after warmup; None = train.steps - warmup_steps
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    fused: bool | None = None  # AdamW fused kernel; None = when the device supports it (else foreach)
    # LR multiplier of Retro's encoder + CCA weights. A retro-fit starts them from scratch (CCA output at zero)
    # beside a trained decoder, so they can take larger steps than the decoder; 1 = one LR for everything.
    retrieval_lr_scale: float = 1.0


@dataclass
class TrainSection:
    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # GLOBAL samples per optimizer step (= world_size * grad_accum * micro-batch)
    seed: int = 1234
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"; under torchrun: LOCAL_RANK
    dtype: str = "auto"  # "auto" = bf16 autocast on CUDA, float32 on CPU; "float32"; "bfloat16" (CUDA only)
    activation_checkpointing: bool = False  # recompute attention / MLP / encoder activations in backward
    compile: bool = False  # torch.compile the model
    compile_backend: str = "inductor"  # torch.compile backend ("inductor"; "aot_eager" / "eager" to debug)
    distributed: str = "auto"  # "auto" (ddp when WORLD_SIZE > 1), "none", "ddp", "fsdp" (FSDP2 fully_shard)
    eval_interval: int = 200  # steps between validation runs (0 = only at the end)
    eval_batches: int = 20  # batches per validation set (0 = the whole set)
    log_interval: int = 10  # steps between metric lines
    ckpt_interval: int = 500  # steps between checkpoints (0 = only at the end)
    keep_last_n: int = 3  # checkpoints kept (older ones deleted); 0 = keep all
    out_dir: str = "runs/train"  # run directory: config.json, metrics.jsonl, checkpoints/, loss.png
    resume: str = "auto"  # "auto" (latest checkpoint of out_dir if any), "never", or a checkpoint path
    progress: bool = True  # tqdm progress bar (rank 0)
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    plot: bool = True  # loss-curve PNG at the end


@dataclass
class SFTSection:
    gate_off: bool = True  # InstructRetro: retrieval path gated off (model.set_gate(0)), context in the prompt
    answer_only: bool = True  # loss on the last assistant answer only (InstructRetro); False = all turns
    retrieval_on: bool = False  # keep retrieval on, neighbours = the context passages (not in the paper)
    max_context: int | None = None  # keep the first N context passages (use evaluation's max_context: 5)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    sft: SFTSection = field(default_factory=SFTSection)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value checks that need no files (files are checked when the run starts)."""
        m, d, o, t = self.model, self.data, self.optim, self.train
        _one_of(m.kind, (None, *MODEL_KINDS), "model.kind")
        _one_of(t.dtype, DTYPES, "train.dtype")
        _one_of(t.distributed, DISTRIBUTED, "train.distributed")
        for name, v, lo in (("data.seq_len", d.seq_len, 1), ("train.steps", t.steps, 1),
                            ("train.batch_size", t.batch_size, 1), ("optim.grad_accum", o.grad_accum, 1),
                            ("optim.warmup_steps", o.warmup_steps, 0), ("train.eval_interval", t.eval_interval, 0),
                            ("train.eval_batches", t.eval_batches, 0), ("train.log_interval", t.log_interval, 1),
                            ("train.ckpt_interval", t.ckpt_interval, 0), ("train.keep_last_n", t.keep_last_n, 0),
                            ("data.num_workers", d.num_workers, 0), ("data.prefetch_factor", d.prefetch_factor, 1)):
            if v < lo:
                raise ConfigError(f"{name}: must be >= {lo}, got {v}")
        if not o.lr > 0:
            raise ConfigError(f"optim.lr: must be > 0, got {o.lr}")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas: two numbers in [0, 1), got {o.betas}")
        if o.weight_decay < 0 or o.grad_clip < 0 or o.eps <= 0:
            raise ConfigError("optim: weight_decay and grad_clip must be >= 0 and eps > 0")
        if o.decay_steps is not None and o.decay_steps < 1:
            raise ConfigError(f"optim.decay_steps: must be >= 1, got {o.decay_steps}")
        if self.sft.max_context is not None and self.sft.max_context < 0:
            raise ConfigError(f"sft.max_context: must be >= 0, got {self.sft.max_context}")
        if m.kind == "retro" or (m.kind is None and not m.init_from):  # (a loaded model is checked later)
            m.retro.validate(m.gpt)
        # seq_len vs chunk_len is checked when the run starts: instruction tuning with the gate off runs the
        # decoder alone and takes any seq_len
        if m.freeze_decoder and m.kind == "gpt":
            raise ConfigError("model.freeze_decoder needs model.kind = \"retro\" (it freezes the GPT under Retro)")
        if d.weights is not None and len(d.weights) != len(d.train):
            raise ConfigError(f"data.weights: {len(d.weights)} weights for {len(d.train)} train stores")
        if d.weights is not None and (any(w < 0 for w in d.weights) or not sum(d.weights) > 0):
            raise ConfigError(f"data.weights: must be >= 0 with a positive sum, got {d.weights}")
        for split in ("train", "val"):
            stores, tables = getattr(d, split), getattr(d, f"{split}_neighbors")
            if tables and len(tables) != len(stores):
                raise ConfigError(f"data.{split}_neighbors: {len(tables)} tables for {len(stores)} stores "
                                  f"(give one neighbour table per store)")

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, d)

    def save(self, path: str | os.PathLike) -> None:
        """JSON, written atomically (temp file + rename)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


def _one_of(v: Any, allowed: tuple, name: str) -> None:
    if v not in allowed:
        raise ConfigError(f"{name}: must be one of {allowed}, got {v!r}")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- generic dataclass <-> dict
def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, name: str) -> Any:
    """``value`` checked against the annotation ``tp`` (and converted: int -> float, list -> tuple, ...)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, name)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, name)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            args = typing.get_args(tp)
            elem = args[0] if args else Any
            out = [_convert(x, elem, f"{name}[{i}]") for i, x in enumerate(value)]
            return tuple(out) if origin is tuple else out
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds dataclass ``cls`` from a (nested) dict: types checked, unknown keys -> ConfigError naming them."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix or cls.__name__}] must be a table, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    where = f"[{prefix}]" if prefix else "config"
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(names)})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


# ---------------------------------------------------------------------- files and overrides
def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """TOML (``.toml``), YAML (``.yaml``/``.yml``, needs PyYAML) or JSON (``.json``) -> nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as e:
            raise ConfigError(f"{path}: YAML configs need PyYAML (pip install pyyaml), or use TOML") from e
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON: {e}") from e
    else:
        from pyretro.retrieval.pipeline import load_toml

        data = load_toml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of sections")
    return data


def _parse_value(text: str) -> Any:
    """A TOML value (``8``, ``true``, ``"x"``, ``[1, 2]``), or the raw string when it is not one."""
    from pyretro.retrieval.pipeline import _parse_value as parse

    return parse(text)


def _field_type(cls: type, path: list[str], item: str) -> Any:
    tp: Any = cls
    for i, key in enumerate(path):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"override {item!r}: {'.'.join(path[:i])} is not a section")
        hints = _hints(tp)
        if key not in hints:
            where = ".".join(path[:i]) or "config"
            raise ConfigError(f"override {item!r}: unknown key {key!r} in [{where}] "
                              f"(known: {', '.join(f.name for f in dataclasses.fields(tp))})")
        tp = hints[key]
    return tp


def _admits(tp: Any, kind: type) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_admits(a, kind) for a in typing.get_args(tp))
    return tp is kind or typing.get_origin(tp) is kind


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...], cls: type = TrainConfig
                    ) -> dict[str, Any]:
    """``--section.key=value`` / ``--model.gpt.d_model=256`` strings applied to a nested dict.

    Values parse as TOML (``8``, ``1e-4``, ``true``, ``[1, 2]``, ``"x"``); a bare word is a string. A value
    for a string field stays the raw text (``--train.out_dir=123``), one for a list field may be a single
    item (``--data.train=store``). ``none`` / ``null`` sets an optional field to None.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        key, eq, text = item.lstrip("-").partition("=")
        path = [p for p in key.split(".")]
        if not eq or len(path) < 2 or not all(path):
            raise ConfigError(f"override {item!r}: expected --section.key=value")
        tp = _field_type(cls, path, item)
        value = _parse_value(text)
        if text.strip().lower() in ("none", "null") and _admits(tp, type(None)):
            value = None
        elif _admits(tp, bool) and text.strip().lower() in ("true", "false"):
            value = text.strip().lower() == "true"
        elif _admits(tp, str) and not isinstance(value, str):
            value = text
        elif (_admits(tp, list) or _admits(tp, tuple)) and not isinstance(value, list):
            value = [value]
        node = data
        for p in path[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section in the config file")
            node = nxt
        node[path[-1]] = value
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Config file (or the defaults when ``path`` is None) + overrides -> a validated :class:`TrainConfig`."""
    data = read_config_file(path) if path is not None else {}
    return from_dict(TrainConfig, apply_overrides(data, list(overrides)))


__all__ = [
    "DataSection",
    "ModelSection",
    "OptimSection",
    "SFTSection",
    "TrainConfig",
    "TrainSection",
    "apply_overrides",
    "from_dict",
    "load_config",
    "read_config_file",
    "to_dict",
]
