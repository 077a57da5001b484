"""Settings of ``pyretro demo``: one dataclass, three sizes (``tiny`` for CI, ``small`` the default, ``base``
for a GPU). Every field is recorded in the output directory, so a rerun with other settings redoes the stages
they affect."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pyretro.data.synthetic import ATTRIBUTES
from pyretro.errors import ConfigError


@dataclass
class DemoConfig:
    size: str = "small"
    seed: int = 0
    device: str = "cpu"
    # corpus (pyretro.data.synthetic) and its demo variant (corpus.py: full names instead of pronouns)
    num_entities: int = 1000
    docs_per_entity: int = 4
    heldout_fraction: float = 0.2
    full_name_share: float = 1.0
    # fact sentences every document of an entity opens with, in one fixed wording (a canonical biography, as
    # articles about a person reuse one): the text a Retro neighbour continues in step with; 0 = none
    shared_lead: int = 7
    # reading-comprehension documents per training person (a document, then questions about it with answers):
    # text that teaches answering from what precedes in the context; held-out people get none
    reading_docs: int = 0
    reading_questions: int = 3  # questions per reading document
    # one-off practice people (pyretro.demo.corpus.practice_people: in no store but their own, three documents
    # each) for the two steps that teach answering from the context (docs/demo.md "Why QA stays at the prior"):
    practice_people: int = 0
    bursty_steps: int = 0  # steps on their bursty pairs after pretraining (both models start from there)
    bursty_seq_len: int = 320  # one pair per sample, cropped to this (a pair is ~330 tokens of the demo's BPE)
    # instruction-tuning data: "questions" = held-out people's questions, one per sample, with retrieved passages;
    # "practice" = conversations about practice people (a document, then all their questions; loss on every answer)
    sft_data: str = "questions"
    practice_seq_len: int = 448  # row length of practice conversations (~360-450 tokens: none cut)
    # tokenizer / store / retrieval
    vocab_size: int = 2048
    chunk_len: int = 32
    seq_len: int = 256
    embed_dim: int = 256  # hashing embedder (word unigrams, idf fitted on the database)
    k_train: int = 2  # neighbours per chunk in retro-fitting
    k_eval: int = 2  # neighbours per chunk in perplexity evaluation
    k_saved: int = 4  # neighbour-table width
    neighbor_len: int | None = None  # r; None = 2 * chunk_len
    # models
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    encoder_layers: int = 1
    encoder_d_model: int | None = 64  # narrower than the decoder: the encoder reads K*r tokens per chunk
    cca_layers: tuple[int, ...] = (3, 4)
    cca_rotary: bool = True  # positions inside CCA: lets a neighbour's continuation be read in step
    cca_qk_norm: bool = True  # RMS-normalized CCA queries/keys: keeps a high retrieval LR from collapsing
    # learned CCA position bias, starting at this score offset on the aligned continuation position
    # (RetroConfig.cca_position_bias): the fresh CCA reads near-verbatim neighbours from the first steps on every
    # seed, where without it some seeds took 150+ steps to start using retrieval (docs/demo.md); None = off
    cca_position_bias: float | None = 3.0
    retrieval_lr_scale: float = 10.0  # LR multiplier of the new encoder + CCA weights in retro-fitting (30 diverged)
    # training (steps are optimizer steps of batch_size samples of seq_len tokens)
    batch_size: int = 8
    pretrain_steps: int = 250
    pretrain_lr: float = 2e-3
    continue_steps: int = 300  # GPT continued pretraining and Retro retro-fitting: the same budget
    continue_lr: float = 2e-3
    warmup_steps: int = 20
    # warmup of continued pretraining / retro-fitting (None = warmup_steps; at most a fifth of the steps): a slow
    # start lets the fresh CCA of the retro-fit catch on more reliably across seeds (docs/demo.md)
    continue_warmup_steps: int | None = 60
    eval_interval: int = 25
    eval_batches: int = 8
    # instruction tuning and QA
    sft_steps: int = 80
    sft_lr: float = 1e-3
    sft_batch_size: int = 8
    sft_seq_len: int = 320
    qa_passages: int = 1  # retrieved passages in the prompt
    qa_passage_kind: str = "document"  # the documents of the top chunks, or "chunk": chunk + continuation
    # whose questions instruction-tune the models: "heldout" = half of the held-out entities (facts never trained
    # on: only reading the passage answers them), "train" = the training entities (answerable from memory too)
    sft_entities: str = "heldout"
    qa_eval: int = 120  # held-out questions evaluated per mode
    qa_max_new_tokens: int = 12
    examples: int = 4  # answers generated with re-retrieval and shown in the report
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def r(self) -> int:
        return self.neighbor_len or 2 * self.chunk_len

    def validate(self) -> None:
        if self.seq_len % self.chunk_len:
            raise ConfigError(f"seq_len={self.seq_len} must be a multiple of chunk_len={self.chunk_len}")
        if not 1 <= self.k_train <= self.k_saved or not 1 <= self.k_eval <= self.k_saved:
            raise ConfigError(f"k_train={self.k_train} and k_eval={self.k_eval} must be in [1, k_saved={self.k_saved}]")
        if self.num_entities < 10:
            raise ConfigError(f"num_entities must be >= 10, got {self.num_entities}")
        if self.qa_passage_kind not in ("document", "chunk"):
            raise ConfigError(f"qa_passage_kind must be 'document' or 'chunk', got {self.qa_passage_kind!r}")
        if self.sft_entities not in ("train", "heldout"):
            raise ConfigError(f"sft_entities must be 'train' or 'heldout', got {self.sft_entities!r}")
        if not 0 <= self.shared_lead <= len(ATTRIBUTES):
            raise ConfigError(f"shared_lead must be in [0, {len(ATTRIBUTES)}] (facts per person), got {self.shared_lead}")
        if self.reading_docs < 0:
            raise ConfigError(f"reading_docs must be >= 0, got {self.reading_docs}")
        if not 1 <= self.reading_questions <= len(ATTRIBUTES):
            raise ConfigError(f"reading_questions must be in [1, {len(ATTRIBUTES)}] (facts per person), "
                              f"got {self.reading_questions}")
        for name in ("bursty_seq_len", "practice_seq_len"):
            if getattr(self, name) < 2:
                raise ConfigError(f"{name} must be >= 2, got {getattr(self, name)}")
        if self.practice_people < 0 or self.bursty_steps < 0:
            raise ConfigError(f"practice_people and bursty_steps must be >= 0, got {self.practice_people}, "
                              f"{self.bursty_steps}")
        if self.sft_data not in ("questions", "practice"):
            raise ConfigError(f"sft_data must be 'questions' or 'practice', got {self.sft_data!r}")
        if (self.bursty_steps or self.sft_data == "practice") and self.practice_people < 2:
            raise ConfigError("bursty_steps > 0 and sft_data='practice' need practice people: set practice_people "
                              f"(e.g. 3000), got {self.practice_people}")
        if not self.retrieval_lr_scale > 0:
            raise ConfigError(f"retrieval_lr_scale must be > 0, got {self.retrieval_lr_scale}")
        pb = self.cca_position_bias
        if pb is not None and (isinstance(pb, bool) or not isinstance(pb, (int, float)) or not math.isfinite(pb)):
            raise ConfigError(f"cca_position_bias must be None or a finite number, got {pb!r}")
        if self.continue_warmup_steps is not None and self.continue_warmup_steps < 0:
            raise ConfigError(f"continue_warmup_steps must be >= 0 or None, got {self.continue_warmup_steps}")
        for name in ("pretrain_steps", "continue_steps", "sft_steps", "qa_eval", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cca_layers"] = list(self.cca_layers)
        return d

    def key(self, *fields: str) -> str:
        """A short hash of the given fields (all when none): what a stage's output depends on."""
        d = self.to_dict()
        sel = {f: d[f] for f in fields} if fields else d
        return hashlib.sha1(json.dumps(sel, sort_keys=True).encode()).hexdigest()[:12]


# Measured on a 2-core CPU (docs/demo.md, bench/RESULTS.md "Demo"): small stays under 10 minutes.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(num_entities=60, vocab_size=512, chunk_len=16, seq_len=64, d_model=48, n_layers=2, n_heads=2,
                 cca_layers=(2,), batch_size=8, pretrain_steps=20, continue_steps=10, warmup_steps=3,
                 eval_interval=5, eval_batches=2, sft_steps=8, sft_seq_len=160, qa_eval=12, examples=2,
                 qa_max_new_tokens=6, bursty_seq_len=512, practice_seq_len=640),  # its 512-token BPE spells longer
    "small": {},
    "base": dict(num_entities=4000, vocab_size=4096, seq_len=512, d_model=384, n_layers=8, n_heads=6,
                 encoder_layers=2, encoder_d_model=192, cca_layers=(5, 8), batch_size=32, pretrain_steps=3000, continue_steps=1500,
                 pretrain_lr=1e-3, continue_lr=5e-4, warmup_steps=100, continue_warmup_steps=300,
                 eval_interval=250, eval_batches=20,
                 sft_steps=400, sft_batch_size=32, qa_eval=500, examples=6),
}


def make_config(size: str = "small", **overrides: Any) -> DemoConfig:
    """The preset ``size`` with ``overrides`` (field=value) applied; an explicit None is a value too (e.g.
    ``cca_position_bias=None`` turns the bias off)."""
    if size not in SIZES:
        raise ConfigError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    values = {**SIZES[size], **overrides}
    names = {f.name for f in dataclasses.fields(DemoConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown demo setting(s): {', '.join(sorted(unknown))}")
    cfg = DemoConfig(size=size, **values)
    cfg.cca_layers = tuple(cfg.cca_layers)
    cfg.validate()
    return cfg
