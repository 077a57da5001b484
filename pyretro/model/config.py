"""Model configurations: ``GPTConfig`` (the decoder) and ``RetroConfig`` (encoder + chunked cross-attention).

Both are plain dataclasses; ``validate()`` raises :class:`pyretro.errors.ConfigError` naming the field.
Defaults follow the papers (Retro: Borgeaud et al. 2021; InstructRetro: Wang et al. 2024 / Megatron-LM).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pyretro.errors import ConfigError

MLP_KINDS = ("swiglu", "gelu", "gelu_tanh")
NORM_KINDS = ("rmsnorm", "layernorm")
POSITION_KINDS = ("rope", "learned")


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


def _int_field(cfg: Any, name: str, minimum: int) -> None:
    v = getattr(cfg, name)
    _check(isinstance(v, int) and not isinstance(v, bool), f"{type(cfg).__name__}.{name}", f"must be an int, got {v!r}")
    _check(v >= minimum, f"{type(cfg).__name__}.{name}", f"must be >= {minimum}, got {v}")


@dataclass
class GPTConfig:
    """A decoder-only transformer (pre-norm). Covers GPT-2 and the Llama family."""

    vocab_size: int = 32000  # embedding rows (= output logits)
    d_model: int = 512  # residual width
    n_layers: int = 12
    n_heads: int = 8  # query heads
    n_kv_heads: int | None = None  # key/value heads for grouped-query attention; None = n_heads
    head_dim: int | None = None  # None = d_model // n_heads
    d_ff: int | None = None  # MLP hidden width; None = 4*d_model (GELU) or 8/3*d_model rounded to 64 (SwiGLU)
    mlp: str = "swiglu"  # "swiglu" (Llama, InstructRetro), "gelu" (exact) or "gelu_tanh" (GPT-2)
    norm: str = "rmsnorm"  # "rmsnorm" (Llama) or "layernorm" (GPT-2)
    norm_eps: float = 1e-5
    position: str = "rope"  # "rope" (rotary in self-attention) or "learned" (GPT-2 absolute embeddings)
    rotary_theta: float = 10000.0
    rotary_fraction: float = 1.0  # share of each head's dims that rotate (InstructRetro's GPT: 0.5)
    rotary_interleaved: bool = False  # False: GPT-NeoX/Llama half-split pairs; True: GPT-J (2i, 2i+1) pairs
    max_seq_len: int = 2048  # longest sequence (size of learned position table / generation limit)
    dropout: float = 0.0  # residual, embedding and attention dropout (training only)
    tie_embeddings: bool = True  # output projection shares the token embedding matrix
    bias: bool = False  # biases in attention/MLP linears (GPT-2: True)
    lm_head_bias: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # Derived sizes.
    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def dim_head(self) -> int:
        return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

    @property
    def ff_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":
            return 64 * -(-(8 * self.d_model // 3) // 64)
        return 4 * self.d_model

    @property
    def rotary_dim(self) -> int:
        """Rotated dims per head (even); 0 when positions are learned."""
        if self.position != "rope":
            return 0
        return 2 * int(self.dim_head * self.rotary_fraction / 2)

    def validate(self) -> None:
        n = "GPTConfig"
        for f, lo in (("vocab_size", 1), ("d_model", 1), ("n_layers", 1), ("n_heads", 1), ("max_seq_len", 1)):
            _int_field(self, f, lo)
        if self.n_kv_heads is not None:
            _int_field(self, "n_kv_heads", 1)
            _check(self.n_heads % self.n_kv_heads == 0, f"{n}.n_kv_heads",
                   f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim is not None:
            _int_field(self, "head_dim", 1)
        else:
            _check(self.d_model % self.n_heads == 0, f"{n}.n_heads",
                   f"d_model={self.d_model} is not divisible by n_heads={self.n_heads} (or set head_dim)")
        if self.d_ff is not None:
            _int_field(self, "d_ff", 1)
        _check(self.mlp in MLP_KINDS, f"{n}.mlp", f"must be one of {MLP_KINDS}, got {self.mlp!r}")
        _check(self.norm in NORM_KINDS, f"{n}.norm", f"must be one of {NORM_KINDS}, got {self.norm!r}")
        _check(self.position in POSITION_KINDS, f"{n}.position", f"must be one of {POSITION_KINDS}, got {self.position!r}")
        _check(self.norm_eps > 0, f"{n}.norm_eps", f"must be > 0, got {self.norm_eps}")
        _check(self.rotary_theta > 0, f"{n}.rotary_theta", f"must be > 0, got {self.rotary_theta}")
        _check(0.0 <= self.rotary_fraction <= 1.0, f"{n}.rotary_fraction", f"must be in [0, 1], got {self.rotary_fraction}")
        _check(0.0 <= self.dropout < 1.0, f"{n}.dropout", f"must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        return _from_dict(cls, d)


def default_cca_layers(n_layers: int) -> tuple[int, ...]:
    """Megatron-LM's Retro layers, 1-based: from layer 6 (models with <= 15 layers) else 9, then every 3rd."""
    start = 6 if n_layers <= 15 else 9
    return tuple(range(start, n_layers + 1, 3))


@dataclass
class RetroConfig:
    """The retrieval part added on top of a :class:`GPTConfig` decoder."""

    chunk_len: int = 64  # m: tokens per chunk; each chunk retrieves its own neighbours
    num_neighbors: int = 2  # k: neighbours per chunk used in training (more can be given at inference)
    neighbor_len: int | None = None  # r: tokens per neighbour (chunk + its continuation); None = 2*chunk_len
    encoder_layers: int = 2  # bidirectional encoder layers (Retro: 2; more did not help)
    encoder_d_model: int | None = None  # encoder width; None = the decoder's d_model (RETRO used 896)
    encoder_heads: int | None = None  # None = the decoder's n_heads
    encoder_d_ff: int | None = None  # None = 4*encoder width (GELU) / 8/3 (SwiGLU), like the decoder
    encoder_rotary: bool = True  # rotary positions (0..r-1) in the encoder's self-attention
    # Decoder layers with chunked cross-attention, 1-BASED layer numbers as in the papers/Megatron-LM
    # (layer 1 is the first block). None = default_cca_layers(n_layers): 6, 9, 12, ... (or 9, 12, ...).
    cca_layers: tuple[int, ...] | None = None
    cca_rotary: bool = False  # rotary inside CCA (query: index in its attending chunk; key: index in neighbour)
    # RMS-normalize each CCA query and key head (learnable scale) before the dot product: bounded attention
    # logits, so the fresh CCA weights of a retro-fit can train at a high LR without saturating the softmax.
    cca_qk_norm: bool = False
    # Key/value heads of the CCA layers (grouped-query CCA when < n_heads; must divide n_heads). None = n_heads,
    # as Megatron-LM's Retro (its cross-attention rejects grouped-query heads). Fewer heads shrink the CCA
    # key/value projections, which run on all K*r encoded tokens per chunk, and the decode cache.
    cca_kv_heads: int | None = None
    # Learned position bias in CCA: a score offset per (head, query index in its attending chunk, neighbour
    # position), starting at this value where the neighbour position is chunk_len + the query index (the
    # continuation token that comes next were the neighbour a verbatim copy of the text) and 0 elsewhere.
    # A fresh CCA then reads near-duplicate neighbours in step from the first step; without it, when it
    # learns to do so varies run to run (docs/model.md). None = no bias (Megatron-LM); 0.0 = bias from zero.
    cca_position_bias: float | None = None
    gate: float = 1.0  # scales every CCA output; 0 = decoder alone (InstructRetro instruction tuning)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata saved with the model

    def __post_init__(self) -> None:
        if self.cca_layers is not None:
            self.cca_layers = tuple(self.cca_layers)
        self.validate()

    @property
    def r(self) -> int:
        return 2 * self.chunk_len if self.neighbor_len is None else self.neighbor_len

    def resolved_cca_layers(self, n_layers: int) -> tuple[int, ...]:
        """1-based CCA layer numbers for a decoder of ``n_layers`` (validated against it)."""
        layers = default_cca_layers(n_layers) if self.cca_layers is None else self.cca_layers
        _check(len(layers) > 0, "RetroConfig.cca_layers",
               f"no chunked cross-attention layer for a {n_layers}-layer decoder (default starts at layer 6/9);"
               " set cca_layers explicitly")
        for x in layers:
            _check(isinstance(x, int) and 1 <= x <= n_layers, "RetroConfig.cca_layers",
                   f"layer numbers are 1-based and must lie in [1, {n_layers}], got {x!r}")
        _check(list(layers) == sorted(set(layers)), "RetroConfig.cca_layers", f"must be strictly increasing, got {layers}")
        return tuple(layers)

    def validate(self, gpt: GPTConfig | None = None) -> None:
        n = "RetroConfig"
        for f, lo in (("chunk_len", 1), ("num_neighbors", 1), ("encoder_layers", 1)):
            _int_field(self, f, lo)
        for f in ("neighbor_len", "encoder_d_model", "encoder_heads", "encoder_d_ff", "cca_kv_heads"):
            if getattr(self, f) is not None:
                _int_field(self, f, 1)
        _check(isinstance(self.gate, (int, float)), f"{n}.gate", f"must be a number, got {self.gate!r}")
        pb = self.cca_position_bias
        _check(pb is None or (isinstance(pb, (int, float)) and not isinstance(pb, bool) and math.isfinite(pb)),
               f"{n}.cca_position_bias", f"must be None or a finite number, got {pb!r}")
        if gpt is None:
            return
        self.resolved_cca_layers(gpt.n_layers)
        d_enc = self.encoder_d_model or gpt.d_model
        heads = self.encoder_heads or gpt.n_heads
        _check(d_enc % heads == 0, f"{n}.encoder_heads", f"encoder width {d_enc} is not divisible by {heads} heads")
        if self.encoder_rotary:
            _check((d_enc // heads) % 2 == 0, f"{n}.encoder_rotary", f"needs an even encoder head dim, got {d_enc // heads}")
        if self.cca_kv_heads is not None:
            _check(gpt.n_heads % self.cca_kv_heads == 0, f"{n}.cca_kv_heads",
                   f"n_heads={gpt.n_heads} must be a multiple of cca_kv_heads={self.cca_kv_heads}")
        if self.cca_rotary:
            _check(gpt.dim_head % 2 == 0, f"{n}.cca_rotary", f"needs an even head dim, got {gpt.dim_head}")
        _check(gpt.dim_head <= 128, f"{n}", f"chunked cross-attention supports head dims <= 128, got {gpt.dim_head}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cca_layers"] = None if self.cca_layers is None else list(self.cca_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetroConfig:
        return _from_dict(cls, d)


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}")
    return cls(**d)
