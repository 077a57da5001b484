"""``pyretro db build``: ingest (optional) -> embed -> index -> query, driven by a TOML config.

Layout of ``[build] out``: ``store/`` (when ingested), ``embeddings/``, ``index/``, ``neighbors/``.
Every stage is skipped when its output is complete with the same settings, resumes when interrupted, and
is rebuilt when the config (or an upstream output) changed: the config is the source of truth here, while
the single-step commands refuse to replace an output made with other settings.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from pyretro.errors import ConfigError

DEFAULTS: dict[str, dict[str, Any]] = {
    "build": {"out": None, "overwrite": False, "progress": True},
    "store": {"path": None},
    "ingest": {},
    "embed": {"embedder": "hashing:256", "device": "auto", "batch_size": 256, "block_size": 16384,
              "precision": "auto"},
    "index": {"factory": "auto", "memory_budget": "8G", "train_size": None, "nprobe": None, "efSearch": None,
              "recall_sample": 1000},
    "query": {"k": 20, "k_search": None, "exclude": "doc", "chunks_per_sample": None, "block_size": 65536},
}


def load_toml(path: str | os.PathLike) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def _parse_value(text: str) -> Any:
    """A TOML value (``8``, ``true``, ``"x"``, ``[1, 2]``), or the raw string when it is not one."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """``--section.key=value`` (or ``section.key=value``) strings applied onto ``cfg``."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, eq, value = item.lstrip("-").partition("=")
        section, dot, name = key.partition(".")
        if not eq or not dot or not name:
            raise ConfigError(f"override {item!r}: expected --section.key=value")
        cfg.setdefault(section, {})[name] = _parse_value(value)
    return cfg


def resolve(cfg: dict) -> dict:
    """Defaults filled in; unknown sections/keys rejected (a typo must not be silently ignored)."""
    out: dict[str, dict[str, Any]] = {}
    for section, values in cfg.items():
        if section not in DEFAULTS:
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(DEFAULTS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        if section != "ingest":
            unknown = set(values) - set(DEFAULTS[section])
            if unknown:
                raise ConfigError(f"[{section}]: unknown key(s) {', '.join(sorted(unknown))} "
                                  f"(known: {', '.join(DEFAULTS[section])})")
    for section, defaults in DEFAULTS.items():
        out[section] = {**defaults, **cfg.get(section, {})}
    if not out["build"]["out"]:
        raise ConfigError("[build] out: the output directory is required")
    if not out["store"]["path"] and not out["ingest"]:
        raise ConfigError("give [store] path (an existing chunk store) or an [ingest] section (raw input)")
    return out


def _ingest(cfg: dict, out: Path, overwrite: bool, progress: bool) -> Path:
    """[ingest] -> ``out/store`` via ``pyretro.data.ingest.ingest`` (keys = its keyword arguments)."""
    from pyretro.retrieval.dist import on_rank0

    try:
        from pyretro.data.ingest import ingest
    except ImportError as e:
        raise ConfigError("[ingest] needs pyretro.data.ingest, which is not available in this install") from e
    kwargs = dict(cfg["ingest"])
    inputs = kwargs.pop("inputs", None)
    if not inputs:
        raise ConfigError("[ingest] inputs: the raw input files/directories/globs are required")
    target = out / "store"
    # stores are finalized atomically: a header means a complete store, reused unless overwrite
    if overwrite or not (target / "header.json").is_file():
        on_rank0(ingest, inputs, target, overwrite=overwrite, progress=progress, **kwargs)
    return target


def build_database(cfg: dict) -> dict[str, Path]:
    """Runs every stage of a resolved config; returns the output paths."""
    from pyretro.retrieval.dist import on_rank0
    from pyretro.retrieval.embed import embed_store, open_embeddings
    from pyretro.retrieval.embedders import make_embedder
    from pyretro.retrieval.filter import groups_from_sample_length
    from pyretro.retrieval.index import build_index, load_index, recall, save_index
    from pyretro.retrieval.query import build_neighbor_table
    from pyretro.store import ChunkStore

    b, e, ix, q = cfg["build"], cfg["embed"], cfg["index"], cfg["query"]
    out = Path(b["out"])
    overwrite, progress = bool(b["overwrite"]), bool(b["progress"])
    store_path = Path(cfg["store"]["path"]) if cfg["store"]["path"] else _ingest(cfg, out, overwrite, progress)
    store = ChunkStore.open(store_path)
    embedder = make_embedder(e["embedder"], device=e["device"], batch_size=e["batch_size"],
                             precision=e["precision"])
    emb_dir = embed_store(store, embedder, out / "embeddings", block_size=e["block_size"],
                          batch_size=e["batch_size"], overwrite=overwrite, progress=progress, rebuild_stale=True)
    eh, emb = open_embeddings(emb_dir, store, embedder)
    index_dir = out / "index"
    # everything that shapes the index; a rerun with the same request reuses the saved index
    request = {key: ix[key] for key in ("factory", "memory_budget", "train_size", "nprobe", "efSearch")}
    header = {"store_id": store.store_id, "embedder": eh["embedder"], "embedder_spec": eh["embedder_spec"],
              "request": request}
    reuse = False
    if (index_dir / "header.json").is_file() and not overwrite:
        index, ih = load_index(index_dir)
        reuse = all(ih.get(key) == v for key, v in header.items()) and ih["ntotal"] == len(store)
    if not reuse:
        def build_and_save() -> None:  # a single index: rank 0 builds it while the others wait
            index, ih = build_index(emb, None, ix["factory"], ix["memory_budget"], ix["train_size"],
                                    header=header, progress=progress, nprobe=ix["nprobe"], efSearch=ix["efSearch"])
            if ix["recall_sample"]:
                ih["recall@2"] = recall(index, emb, min(int(ix["recall_sample"]), len(emb)), k=2)
            save_index(index, index_dir, ih)

        on_rank0(build_and_save)
        index, ih = load_index(index_dir)
    groups = None
    if q["chunks_per_sample"]:
        groups = groups_from_sample_length(len(store), int(q["chunks_per_sample"]))
    table = build_neighbor_table(out / "neighbors", index, emb, store, k=int(q["k"]), k_search=q["k_search"],
                                 exclude=q["exclude"], groups=groups, block_size=int(q["block_size"]),
                                 index_header=ih, embedder_fingerprint=eh["embedder"], overwrite=overwrite,
                                 progress=progress, rebuild_stale=True)
    return {"store": store_path, "embeddings": emb_dir, "index": index_dir, "neighbors": table}


def summary_line(paths: dict[str, Path]) -> str:
    return "  ".join(f"{k}={v}" for k, v in paths.items())


__all__ = ["DEFAULTS", "apply_overrides", "build_database", "load_toml", "resolve"]
