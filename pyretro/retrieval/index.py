"""faiss index over chunk embeddings: ``auto`` policy, training on a sample, blockwise add, save/load,
shard merge, search parameters and a recall helper. Inner product on L2-normalized rows (= cosine)."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pyretro.errors import ConfigError, MismatchError, StoreError
from pyretro.retrieval.blocks import read_json, write_json_atomic

INDEX_FILE = "index.faiss"
HEADER = "header.json"
DEFAULT_BUDGET = 8 << 30


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ConfigError("retrieval needs faiss: pip install faiss-cpu (or faiss-gpu)") from e
    return faiss


def parse_bytes(s: str | int | float) -> int:
    """'8G', '512M', '1.5GiB', 1000 -> bytes."""
    if isinstance(s, (int, float)):
        return int(s)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(s))
    if not m:
        raise ConfigError(f"memory size {s!r}: expected a number with an optional K/M/G/T suffix")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def _pow2_near(x: float) -> int:
    return 1 << max(0, round(math.log2(max(1.0, x))))


def _pq_m(dim: int, max_m: int = 64) -> int:
    """Number of PQ sub-quantizers: the largest divisor of ``dim`` <= min(max_m, dim // 2) (>=1)."""
    for m in range(min(max_m, max(1, dim // 2)), 0, -1):
        if dim % m == 0:
            return m
    return 1


def auto_factory(n: int, dim: int, memory_budget: int | str = DEFAULT_BUDGET) -> dict:
    """Picks an index for ``n`` vectors of ``dim`` within ``memory_budget`` bytes.

    - n <= 50k: ``Flat`` (exact; a tiny corpus never meets an IVF it cannot train).
    - IVF with nlist ~ 4 sqrt(n) (power of two, >= 39 training points per list): ``IVFx,Flat`` when the
      raw vectors fit in the budget, else ``IVFx,SQ8`` (1 byte/dim) when that fits, else ``IVFx,PQmnp``
      (m bytes/vector; np: no polysemous training, which only polysemous search uses), and for n >= 10M
      ``OPQm_d,IVFx_HNSW32,PQmnp`` (HNSW coarse quantizer: coarse search stays fast with millions of
      lists). PQ trades recall for memory (see docs/retrieval.md).
    Returns ``{"factory", "nlist", "train_size", "nprobe", "efSearch"}``; nprobe aims at recall@2 >= 0.9.
    """
    budget = parse_bytes(memory_budget)
    n, dim = int(n), int(dim)
    if n <= 50_000:
        return {"factory": "Flat", "nlist": 0, "train_size": 0, "nprobe": None, "efSearch": None}
    nlist = min(_pow2_near(4 * math.sqrt(n)), max(1, 1 << int(math.log2(n // 39))))
    train = min(n, max(64 * nlist, 100_000))
    nprobe = max(8, nlist // 64)
    flat_bytes = n * (dim * 4 + 8)
    if flat_bytes <= 0.8 * budget and n < 10_000_000:
        return {"factory": f"IVF{nlist},Flat", "nlist": nlist, "train_size": train, "nprobe": nprobe,
                "efSearch": None}
    if n * (dim + 8) <= 0.8 * budget and n < 10_000_000:  # 8-bit scalar quantizer: 4x smaller, ~lossless
        return {"factory": f"IVF{nlist},SQ8", "nlist": nlist, "train_size": train, "nprobe": nprobe,
                "efSearch": None}
    m = _pq_m(dim)
    while m > 1 and n * (m + 8) > 0.8 * budget:  # shrink codes until they fit
        m = _pq_m(dim, m - 1)
    if n * (m + 8) > budget:
        raise ConfigError(f"memory_budget {budget} bytes is too small for {n} vectors even with PQ{m}")
    if n >= 10_000_000:
        return {"factory": f"OPQ{m}_{m * 4 if m * 4 <= dim else dim},IVF{nlist}_HNSW32,PQ{m}np", "nlist": nlist,
                "train_size": train, "nprobe": max(nprobe, 2 * nlist // 64), "efSearch": 64}
    return {"factory": f"IVF{nlist},PQ{m}np", "nlist": nlist, "train_size": train, "nprobe": nprobe,
            "efSearch": None}


def set_search_params(index, nprobe: int | None = None, efSearch: int | None = None) -> None:
    """Sets nprobe / efSearch wherever they apply (IVF lists, HNSW quantizer or HNSW index)."""
    faiss = _faiss()
    ps = faiss.ParameterSpace()
    if nprobe is not None and faiss.try_extract_index_ivf(index) is not None:
        ps.set_index_parameter(index, "nprobe", int(nprobe))
    if efSearch is not None:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
            ps.set_index_parameter(index, "quantizer_efSearch", int(efSearch))
        elif "HNSW" in type(faiss.downcast_index(index)).__name__:
            ps.set_index_parameter(index, "efSearch", int(efSearch))


def _gpu_index(index):
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return None
    return faiss.index_cpu_to_all_gpus(index)


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def train_index(embeddings: np.ndarray, factory: str = "auto", memory_budget: int | str = DEFAULT_BUDGET,
                train_size: int | None = None, seed: int = 0, use_gpu: bool = True):
    """An empty trained index and its settings dict (factory resolved, nlist, train_size, nprobe, efSearch)."""
    faiss = _faiss()
    n, dim = embeddings.shape
    if n == 0:
        raise ConfigError("cannot build an index over 0 embeddings")
    if factory == "auto":
        cfg = auto_factory(n, dim, memory_budget)
    else:
        cfg = {"factory": factory, "nlist": 0, "train_size": min(n, 256 * 1024), "nprobe": None, "efSearch": None}
    if train_size is not None:
        cfg["train_size"] = min(n, int(train_size))
    try:
        index = faiss.index_factory(dim, cfg["factory"], faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ConfigError(f"invalid faiss index_factory string {cfg['factory']!r}: {str(e).splitlines()[-1]}") from e
    if not index.is_trained:
        size = max(cfg["train_size"], 1)
        x = np.ascontiguousarray(embeddings[_sample_rows(n, size, seed)], dtype=np.float32)
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and ivf.nlist > len(x):
            raise ConfigError(f"index {cfg['factory']!r} has {ivf.nlist} lists but only {len(x)} training vectors; "
                              "use factory='auto' or fewer lists")
        gpu = _gpu_index(index) if use_gpu else None
        t = time.perf_counter()
        try:
            if gpu is not None:
                gpu.train(x)
                index = faiss.index_gpu_to_cpu(gpu)
            else:
                index.train(x)
        except RuntimeError as e:
            raise ConfigError(f"training index {cfg['factory']!r} on {len(x)} vectors failed: "
                              f"{str(e).splitlines()[-1]}") from e
        cfg["train_seconds"] = round(time.perf_counter() - t, 3)
    cfg["dim"] = dim
    return index, cfg


def add_embeddings(index, embeddings: np.ndarray, lo: int = 0, hi: int | None = None,
                   block_size: int = 65536, progress: bool = True, with_ids: bool | None = None) -> None:
    """Adds rows [lo, hi) in blocks. IVF indexes get explicit ids (so shards keep global ids when merged)."""
    faiss = _faiss()
    hi = len(embeddings) if hi is None else hi
    if with_ids is None:
        with_ids = faiss.try_extract_index_ivf(index) is not None
    if not with_ids and index.ntotal != lo:
        raise ConfigError(f"adding rows from {lo} to an index holding {index.ntotal}: ids would shift")
    for s in tqdm(range(lo, hi, block_size), desc="index add", unit="block", disable=not progress):
        e = min(s + block_size, hi)
        x = np.ascontiguousarray(embeddings[s:e], dtype=np.float32)
        if with_ids:
            index.add_with_ids(x, np.arange(s, e, dtype=np.int64))
        else:
            index.add(x)


def index_memory_bytes(index) -> int:
    """Bytes the index occupies when serialized (~ its RAM footprint)."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:  # avoid serializing a big index just to measure it
        code = ivf.code_size + 8
        return int(ivf.ntotal * code + ivf.quantizer.ntotal * ivf.d * 4 + (1 << 16))
    return int(faiss.serialize_index(index).nbytes)


def save_index(index, out: str | os.PathLike, header: dict) -> Path:
    """``out/index.faiss`` + ``out/header.json``, each written atomically."""
    faiss = _faiss()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{INDEX_FILE}.{os.getpid()}.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out / INDEX_FILE)
    header = {"format": "pyretro.index", "version": 1, "ntotal": int(index.ntotal), "dim": int(index.d),
              "file_bytes": (out / INDEX_FILE).stat().st_size, **header}
    write_json_atomic(out / HEADER, header)
    return out


def to_gpu(index):
    """The index on all visible GPUs when faiss-gpu is installed (search params re-applied), else itself."""
    faiss = _faiss()
    gpu = _gpu_index(index)
    if gpu is None:
        return index
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", int(ivf.nprobe))
    return gpu


def load_index(path: str | os.PathLike, mmap: bool = False, gpu: bool = False):
    """(index, header). ``mmap`` maps IVF lists from disk instead of reading them (large indexes);
    ``gpu`` moves it to the GPUs when faiss-gpu is installed (no-op otherwise)."""
    faiss = _faiss()
    path = Path(path)
    header = read_json(path / HEADER, "index")
    if header.get("format") != "pyretro.index":
        raise StoreError(f"{path}: not a pyretro index")
    f = path / INDEX_FILE
    if not f.is_file():
        raise StoreError(f"{f}: missing")
    index = faiss.read_index(str(f), faiss.IO_FLAG_MMAP if mmap else 0)
    if index.ntotal != header["ntotal"] or index.d != header["dim"]:
        raise StoreError(f"{f}: holds {index.ntotal} x {index.d}, header says {header['ntotal']} x {header['dim']}")
    set_search_params(index, header.get("nprobe"), header.get("efSearch"))
    return (to_gpu(index) if gpu else index), header


def build_index(embeddings: np.ndarray, out: str | os.PathLike | None = None, factory: str = "auto",
                memory_budget: int | str = DEFAULT_BUDGET, train_size: int | None = None, seed: int = 0,
                block_size: int = 65536, header: dict | None = None, progress: bool = True,
                nprobe: int | None = None, efSearch: int | None = None):
    """Trains, adds every row, sets search params and (with ``out``) saves. Returns (index, header)."""
    t0 = time.perf_counter()
    index, cfg = train_index(embeddings, factory, memory_budget, train_size, seed)
    if nprobe is not None:
        cfg["nprobe"] = int(nprobe)
    if efSearch is not None:
        cfg["efSearch"] = int(efSearch)
    add_embeddings(index, embeddings, block_size=block_size, progress=progress)
    set_search_params(index, cfg["nprobe"], cfg["efSearch"])
    cfg["build_seconds"] = round(time.perf_counter() - t0, 3)
    cfg["memory_bytes"] = index_memory_bytes(index)
    cfg["ntotal"] = int(index.ntotal)
    h = {**cfg, **(header or {})}
    if out is not None:
        save_index(index, out, h)
        h = read_json(Path(out) / HEADER, "index")
    return index, h


def merge_shards(shards: list) -> object:
    """Merges indexes built from one trained index on consecutive row ranges, in order, into the first."""
    faiss = _faiss()
    if not shards:
        raise ConfigError("merge_shards: no shards")
    base = shards[0]
    for s in shards[1:]:
        if s.d != base.d:
            raise MismatchError(f"merge_shards: dims differ ({s.d} != {base.d})")
        if faiss.try_extract_index_ivf(base) is not None:
            faiss.merge_into(base, s, False)  # ids were given explicitly when adding
        else:
            try:
                base.merge_from(s, 0)  # flat ids are positions: appending in order is right
            except RuntimeError as e:
                raise ConfigError(f"index type {type(base).__name__} cannot be merged: {e}") from e
    return base


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int, block_size: int = 262144):
    """Exact inner-product top-k over all ``embeddings`` (streamed in blocks: works on a memmap)."""
    faiss = _faiss()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_d = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for s in range(0, len(embeddings), block_size):
        x = np.ascontiguousarray(embeddings[s : s + block_size], dtype=np.float32)
        d, i = faiss.knn(q, x, min(k, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
        d = np.concatenate([best_d, d], 1)
        i = np.concatenate([best_i, np.where(i >= 0, i + s, -1)], 1)
        top = np.argsort(-d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d, top, 1), np.take_along_axis(i, top, 1)
    return best_d, best_i


def recall(index, embeddings: np.ndarray, sample: int | np.ndarray = 1000, k: int = 2, seed: int = 0,
           exclude_self: bool = True) -> float:
    """recall@k of ``index`` vs exact search, on ``sample`` rows of ``embeddings`` used as queries:
    mean |approx top-k & exact top-k| / k. ``exclude_self`` drops the query row itself from both lists."""
    n = len(embeddings)
    ids = _sample_rows(n, int(sample), seed) if np.isscalar(sample) else np.asarray(sample, np.int64)
    q = np.ascontiguousarray(embeddings[ids], dtype=np.float32)
    kk = k + 1 if exclude_self else k
    _, approx = index.search(q, kk)
    _, exact = exact_search(embeddings, q, kk)

    def topk(a):
        if exclude_self:
            a = np.where(a == ids[:, None], -2, a)
            order = np.argsort(a == -2, axis=1, kind="stable")
            a = np.take_along_axis(a, order, 1)
        return a[:, :k]

    a, e = topk(approx), topk(exact)
    hits = ((a[:, :, None] == e[:, None, :]) & (e[:, None, :] >= 0)).any(1).sum()
    return float(hits) / max(1, int((e >= 0).sum()))
