"""Tiny models, datasets and stores for the training-loop tests (imported by tests/test_train_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pyretro.train.config import TrainConfig, load_config

VOCAB = 64
CHUNK = 4
SEQ = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train ~10x faster on one intra-op thread when the 2 cores are shared (import it into a
    test module to make it autouse there)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_overrides(out_dir: Path | str, kind: str = "retro", **extra: object) -> list[str]:
    """A 2-layer model (CCA in layer 2) on seq 16 / chunk 4: a few ms per step on a CPU."""
    ov = [f"--model.kind={kind}", f"--model.gpt.vocab_size={VOCAB}", "--model.gpt.d_model=32",
          "--model.gpt.n_layers=2", "--model.gpt.n_heads=2", f"--model.retro.chunk_len={CHUNK}",
          "--model.retro.cca_layers=[2]", "--model.retro.neighbor_len=8", "--model.retro.encoder_layers=1",
          f"--data.seq_len={SEQ}", "--data.num_workers=0", "--train.steps=6", "--train.batch_size=4",
          f"--train.out_dir={out_dir}", "--train.progress=false", "--train.plot=false", "--train.eval_interval=0",
          "--train.ckpt_interval=0", "--train.log_interval=1", "--optim.warmup_steps=2", "--optim.lr=3e-3"]
    ov += [f"--{k.replace('__', '.')}={str(v).lower() if isinstance(v, bool) else v}" for k, v in extra.items()]
    return ov


def tiny_config(out_dir: Path | str, kind: str = "retro", **extra: object) -> TrainConfig:
    return load_config(None, tiny_overrides(out_dir, kind, **extra))


class PatternDataset:
    """Map-style dataset per the batch contract: learnable sequences (each row counts up from a random
    start, modulo the vocab) with random neighbours; ``loss_mask`` optionally only on the second half."""

    def __init__(self, n: int, seed: int = 0, half_mask: bool = False, seq: int = SEQ, k: int = 2, r: int = 8):
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(1, VOCAB, (n, 1), generator=g)
        self.tokens = (start + torch.arange(seq)) % (VOCAB - 1) + 1
        self.neighbors = torch.randint(0, VOCAB, (n, seq // CHUNK, k, r), generator=g)
        self.neighbors[:, :, -1, r // 2:] = -1  # some padding in the last neighbour
        self.mask = torch.ones(n, seq, dtype=torch.bool)
        if half_mask:
            self.mask[:, : seq // 2] = False

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        nb = self.neighbors[i]
        return {"tokens": self.tokens[i], "loss_mask": self.mask[i], "neighbors": nb, "neighbor_mask": nb >= 0,
                "position": torch.tensor(i)}


def build_store_and_table(root: Path, num_docs: int = 60, chunks_per_sample: int = SEQ // CHUNK) -> dict[str, Path]:
    """A word-tokenizer store (vocab 300, chunk_len 4) + neighbour table (k=2) via the db pipeline."""
    from _retrieval_fixtures import make_store

    from pyretro.retrieval.pipeline import build_database, resolve

    make_store(root / "store", num_docs=num_docs, chunk_len=CHUNK, max_len=60)
    cfg = resolve({"build": {"out": str(root / "db"), "progress": False}, "store": {"path": str(root / "store")},
                   "embed": {"embedder": "hashing:64", "device": "cpu"},
                   "index": {"factory": "Flat", "recall_sample": 0},
                   "query": {"k": 2, "chunks_per_sample": chunks_per_sample}})
    return build_database(cfg)
