"""Pretraining data: Retro samples from a chunk store with their neighbours, weighted blends, and a seeded,
resumable, rank-splitting sampler + DataLoader.

Sample layout (Retro's chunk alignment). Sample ``s`` of a :class:`RetroDataset` is the ``L = seq_len //
chunk_len`` consecutive store chunks ``[s*L, (s+1)*L)``; each chunk fills exactly ``chunk_len`` positions of
the sample, a short chunk (a document's last one) right-padded with the pad id and loss-masked. So sample
chunk ``u`` *is* store chunk ``s*L + u`` and its neighbours are that chunk's row of the neighbour table. The
samples are exactly the groups of ``groups_from_sample_length(num_chunks, L)`` (``pyretro db query
--chunks-per-sample L``), so a table built with those groups obeys Retro's rule: no chunk of a sample
retrieves from any document of that sample. Chunks past the last full sample are not used.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from pyretro.errors import ConfigError, MismatchError
from pyretro.store import ChunkStore

__all__ = [
    "BlendedDataset",
    "ResumableSampler",
    "RetroDataset",
    "blend_schedule",
    "make_loader",
    "store_pad_id",
]


def store_pad_id(store: ChunkStore) -> int:
    """The pad id of the store's tokenizer (``<|pad|>`` and aliases), else 0."""
    tok = store.tokenizer
    if tok is None:
        return 0
    from pyretro.data.tokenizer import special_ids

    pad = special_ids(tok).get("pad")
    return 0 if pad is None else int(pad)


def _as_store(store: Any, what: str) -> ChunkStore:
    if isinstance(store, ChunkStore):
        return store
    if isinstance(store, (str, os.PathLike)):
        return ChunkStore.open(store)
    raise TypeError(f"{what}: expected a ChunkStore or a store path, got {type(store).__name__}")


class BatchItems:
    """``ds[i]`` from ``get_batch([i])`` (negative ``i`` from the end): the datasets here build whole batches."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if i < 0:
            i += len(self)
        return {k: v[0] for k, v in self.get_batch([i]).items()}


def _groups_sha1(num_chunks: int, chunks_per_sample: int, block: int = 1 << 20) -> str:
    """sha1 of ``groups_from_sample_length(num_chunks, L)``'s bytes, streamed (no full array in memory)."""
    h = hashlib.sha1()
    for lo in range(0, num_chunks, block):
        h.update((np.arange(lo, min(lo + block, num_chunks), dtype=np.int64) // chunks_per_sample).tobytes())
    return h.hexdigest()


class RetroDataset(BatchItems, Dataset):
    """Fixed-length samples of ``seq_len`` tokens from a chunk store, with neighbour tokens (map-style).

    ``store``: the sample (query) store, a ``ChunkStore`` or path. ``neighbors``: a ``NeighborTable``, a table
    directory, or None for GPT samples (the very same tokens, without neighbours). ``db_store``: the database
    store the table points into (default: ``store`` when the table was built against it; held-out evaluation
    documents querying another database need it). The first ``k`` table columns are used; each neighbour is
    gathered with its continuation as ``r`` tokens (default ``2 * chunk_len``); -1 ids are all padding, mask
    False. ``vocab_size``: the model's vocabulary, checked with :meth:`check_vocab`.

    Items (see the batch contract in docs/train.md): ``tokens`` int64 [S], ``loss_mask`` bool [S] (False on
    padding), ``neighbors`` int64 [L, k, r], ``neighbor_mask`` bool [L, k, r], ``position`` int64 (sample
    index). :meth:`get_batch` builds a whole batch with one C++ gather per store (what the loader uses).

    Exclusion: a table whose ``groups`` are this dataset's samples (``groups_from_sample_length(len(store),
    L)``, ``--chunks-per-sample L``) never gives a sample a neighbour from its own documents; with another
    grouping a ``UserWarning`` says so (``strict_exclusion=True`` makes it a ``MismatchError``).
    """

    def __init__(self, store: Any, neighbors: Any = None, *, seq_len: int, db_store: Any = None, k: int = 2,
                 r: int | None = None, pad_id: int | None = None, vocab_size: int | None = None,
                 strict_exclusion: bool = False) -> None:
        self.store = _as_store(store, "store")
        m = self.store.chunk_len
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len <= 0:
            raise ConfigError(f"seq_len must be a positive int, got {seq_len!r}")
        if seq_len % m:
            raise ConfigError(f"seq_len {seq_len} is not a multiple of the store's chunk_len {m} ({self.store.path})")
        self.seq_len, self.chunk_len = int(seq_len), m
        self.chunks_per_sample = self.seq_len // m
        self.num_samples = len(self.store) // self.chunks_per_sample
        if self.num_samples == 0:
            raise ConfigError(f"{self.store.path}: {len(self.store)} chunks, fewer than one sample of "
                              f"{self.chunks_per_sample} chunks (seq_len {seq_len} / chunk_len {m})")
        self.pad_id = store_pad_id(self.store) if pad_id is None else int(pad_id)
        self.table = None
        self.table_path = None
        self.db_store: ChunkStore | None = None
        self.k = int(k)
        self.r = 2 * m if r is None else int(r)
        if neighbors is not None:
            self._attach_table(neighbors, db_store, strict_exclusion)
        elif db_store is not None:
            raise ConfigError("db_store given without a neighbour table (neighbors=None gives GPT samples)")
        if vocab_size is not None:
            self.check_vocab(vocab_size)

    # --- setup -----------------------------------------------------------------------------------------
    def _attach_table(self, neighbors: Any, db_store: Any, strict: bool) -> None:
        from pyretro.retrieval import NeighborTable

        table = neighbors if isinstance(neighbors, NeighborTable) else NeighborTable.open(neighbors)
        h = table.header
        if h["query_store_id"] != self.store.store_id:
            raise MismatchError(f"{table.path}: neighbour table of query store {h['query_store_id']}, not of the "
                                f"sample store {self.store.path} ({self.store.store_id})")
        if len(table) != len(self.store):
            raise MismatchError(f"{table.path}: {len(table)} rows, the sample store has {len(self.store)} chunks")
        if db_store is None:
            if h["db_store_id"] != self.store.store_id:
                raise MismatchError(f"{table.path}: the table points into database store {h['db_store_id']}, "
                                    f"not the sample store; pass db_store=")
            db = self.store
        else:
            db = _as_store(db_store, "db_store")
            if h["db_store_id"] != db.store_id:
                raise MismatchError(f"{table.path}: neighbour table of database store {h['db_store_id']}, not of "
                                    f"{db.path} ({db.store_id})")
        if db is not self.store:
            if db.chunk_len != self.chunk_len:
                raise MismatchError(f"chunk_len {db.chunk_len} of database store {db.path} != {self.chunk_len} "
                                    f"of sample store {self.store.path}")
            fa, fb = self.store.tokenizer_fingerprint, db.tokenizer_fingerprint
            if db.vocab_size != self.store.vocab_size or (fa and fb and fa != fb):
                raise MismatchError(f"database store {db.path} and sample store {self.store.path} use different "
                                    f"tokenizers/vocabularies (vocab {db.vocab_size} vs {self.store.vocab_size})")
        if not 1 <= self.k <= table.k_saved:
            raise ConfigError(f"k must be in [1, {table.k_saved}] (neighbours saved in {table.path}), got {self.k}")
        if self.r < 1:
            raise ConfigError(f"r must be >= 1, got {self.r}")
        self.table, self.table_path, self.db_store = table, table.path, db
        self._check_exclusion(h, strict)

    def _check_exclusion(self, h: dict, strict: bool) -> None:
        L = self.chunks_per_sample
        same = h["query_store_id"] == h["db_store_id"]
        problem = None
        if h.get("exclude") == "none":
            if same:
                problem = "the table was built with exclude='none': chunks may retrieve themselves"
        elif h.get("groups_sha1") is None:
            if L > 1:
                problem = (f"the table excludes only each chunk's own document, but a sample spans {L} chunks "
                           f"(possibly several documents)")
        elif h["groups_sha1"] != _groups_sha1(len(self.store), L):
            problem = f"the table's sample groups are not this dataset's samples of {L} chunks"
        if problem:
            msg = (f"{self.table_path}: {problem}; Retro's rule (no neighbour from the sample's own documents) may "
                   f"not hold. Rebuild it with groups_from_sample_length(num_chunks, {L}) "
                   f"(pyretro db query --chunks-per-sample {L}).")
            if strict:
                raise MismatchError(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)

    def check_vocab(self, vocab_size: int) -> None:
        """``MismatchError`` if the stores' tokens (or the pad id) may fall outside a model vocabulary."""
        for st, what in ((self.store, "sample"), (self.db_store, "database")):
            if st is not None and st.vocab_size > vocab_size:
                raise MismatchError(f"{what} store {st.path} has vocab_size {st.vocab_size}, larger than the "
                                    f"model's vocab_size {vocab_size}")
        if not 0 <= self.pad_id < vocab_size:
            raise MismatchError(f"pad_id {self.pad_id} is outside the model's vocabulary [0, {vocab_size})")

    @property
    def has_neighbors(self) -> bool:
        return self.table is not None

    @property
    def pad_fraction(self) -> float:
        """Fraction of sample positions that are padding (short last chunks of documents). Chunks are stored in
        token order, so the used chunks hold exactly the tokens before the end of the last used chunk."""
        n = self.num_samples * self.chunks_per_sample
        return 1.0 - self.store.chunk_span(n - 1)[1] / (n * self.chunk_len)

    def groups(self) -> np.ndarray:
        """Sample id of every store chunk: the ``groups`` to build this dataset's neighbour table with."""
        from pyretro.retrieval import groups_from_sample_length

        return groups_from_sample_length(len(self.store), self.chunks_per_sample)

    # --- pickling: stores reopen by path; the table's mmap is reopened too (never copied) ------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["table"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.table_path is not None:
            from pyretro.retrieval import NeighborTable

            self.table = NeighborTable.open(self.table_path)

    # --- access ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def sample_chunk_ids(self, indices: Any) -> np.ndarray:
        """Store chunk ids int64 [..., L] of samples ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        bad = (idx < 0) | (idx >= self.num_samples)
        if bad.any():
            raise IndexError(f"sample index {int(idx[bad].flat[0])} is out of range [0, {self.num_samples})")
        return idx[..., None] * self.chunks_per_sample + np.arange(self.chunks_per_sample, dtype=np.int64)

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """The batch of samples ``indices`` (batch contract): one gather call per store for the whole batch."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        ids = self.sample_chunk_ids(idx)  # [B, L]
        B, L, m = len(idx), self.chunks_per_sample, self.chunk_len
        tokens = torch.empty((B, L, m), dtype=torch.int64)
        mask = torch.empty((B, L, m), dtype=torch.bool)
        self.store.gather(ids, with_continuation=False, r=m, out=tokens, out_mask=mask, pad_id=self.pad_id)
        batch = {"tokens": tokens.view(B, L * m), "loss_mask": mask.view(B, L * m),
                 "position": torch.from_numpy(idx.copy())}
        if self.table is not None:
            nb_ids = np.asarray(self.table.neighbors[ids.reshape(-1), : self.k]).reshape(B, L, self.k)
            nb = torch.empty((B, L, self.k, self.r), dtype=torch.int64)
            nb_mask = torch.empty((B, L, self.k, self.r), dtype=torch.bool)
            self.db_store.gather(nb_ids, r=self.r, out=nb, out_mask=nb_mask, pad_id=self.pad_id)
            batch["neighbors"], batch["neighbor_mask"] = nb, nb_mask
        return batch

    def __repr__(self) -> str:
        nb = f", k={self.k}, r={self.r}, db={self.db_store.path}" if self.table is not None else ""
        return f"RetroDataset({self.store.path}, samples={self.num_samples}, seq_len={self.seq_len}{nb})"


# --- blends ------------------------------------------------------------------------------------------------
def blend_schedule(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset index, per-dataset sample counter) for blend positions ``0..size-1``, both int64 [size].

    Deterministic, not random draws: after every prefix of ``n`` positions, dataset ``d`` has been used
    ``c_d(n)`` times with ``|c_d(n) - w_d * n| < 1`` (weights normalized; exact for the weights rounded to
    multiples of 2**-40). It is a Pfair schedule: the j-th use of ``d`` must fall in slots
    ``[floor(j / w_d), ceil((j + 1) / w_d))`` and earliest-deadline-first meets every window because the
    weights sum to 1. (Megatron's greedy "largest lag first" can drift slightly past 1.) ~1.5 s per 10^6."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be finite, >= 0, with a positive sum, got {w.tolist()}")
    size = int(size)
    W = [int(round(x * (1 << 40))) for x in w / w.sum()]
    tot = sum(W)
    active = [d for d, x in enumerate(W) if x > 0]
    if len(active) == 1:
        return np.full(size, active[0], dtype=np.int64), np.arange(size, dtype=np.int64)
    which = np.empty(size, dtype=np.int64)
    counter = np.empty(size, dtype=np.int64)
    count = [0] * len(W)
    eligible = [(-(-tot // W[d]), d) for d in active]  # (deadline, dataset) of released jobs; job 0 at slot 0
    heapq.heapify(eligible)
    pending: list[tuple[int, int, int]] = []  # (release, deadline, dataset)
    for t in range(size):
        while pending and pending[0][0] <= t:
            _, dl, d = heapq.heappop(pending)
            heapq.heappush(eligible, (dl, d))
        _, d = heapq.heappop(eligible)
        which[t], counter[t] = d, count[d]
        count[d] = j = count[d] + 1
        release, deadline = j * tot // W[d], -(-(j + 1) * tot // W[d])
        if release <= t + 1:
            heapq.heappush(eligible, (deadline, d))
        else:
            heapq.heappush(pending, (release, deadline, d))
    return which, counter


def _stack_items(dataset: Any, indices: np.ndarray) -> dict[str, torch.Tensor]:
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    return default_collate([dataset[int(i)] for i in indices])


class BlendedDataset(BatchItems, Dataset):
    """A deterministic weighted blend of datasets with the same item layout (e.g. several stores).

    Position ``i`` takes dataset ``d = which[i]`` (see :func:`blend_schedule`: realised counts track
    ``weights * position``), sample ``perm_{d,p}[c % len_d]`` where ``c`` counts d's uses so far and
    ``perm_{d,p}`` is a seeded permutation for pass ``p = c // len_d`` over it (an upsampled dataset is seen
    whole, in a fresh order, before any sample repeats). ``size`` defaults to the datasets' total length.
    Items carry ``position`` = the blend index.
    """

    def __init__(self, datasets: Sequence[Any], weights: Sequence[float], size: int | None = None,
                 seed: int = 0) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ConfigError("BlendedDataset: no datasets")
        if len(weights) != len(self.datasets):
            raise ConfigError(f"BlendedDataset: {len(self.datasets)} datasets but {len(weights)} weights")
        lens = [len(d) for d in self.datasets]
        for j, n in enumerate(lens):
            if n == 0 and weights[j] > 0:
                raise ConfigError(f"BlendedDataset: dataset {j} is empty but has weight {weights[j]}")
        self.size = sum(lens) if size is None else int(size)
        if self.size <= 0:
            raise ConfigError(f"BlendedDataset: size must be > 0, got {self.size}")
        self._check_layout()
        self.seed = int(seed)
        self.which, self.counter = blend_schedule(weights, self.size)
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _check_layout(self) -> None:
        ref = None
        for j, d in enumerate(self.datasets):
            if len(d) == 0:
                continue
            item = d[0]
            layout = {k: (tuple(v.shape), v.dtype) for k, v in item.items() if k != "position"}
            if ref is None:
                ref = (j, layout)
            elif layout != ref[1]:
                raise MismatchError(f"BlendedDataset: dataset {j} yields {layout}, dataset {ref[0]} yields "
                                    f"{ref[1]} (seq_len / k / r / neighbours must agree)")

    def __len__(self) -> int:
        return self.size

    def _perm(self, d: int, p: int) -> np.ndarray:
        key = (d, p)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.seed, d, p]).permutation(len(self.datasets[d]))
        return self._perms[key]

    def source(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """(dataset index, sample index inside it) of blend positions ``indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = (idx < 0) | (idx >= self.size)
        if bad.any():
            raise IndexError(f"blend index {int(idx[bad][0])} is out of range [0, {self.size})")
        which, c = self.which[idx], self.counter[idx]
        inner = np.empty_like(idx)
        for j in range(len(idx)):
            n = len(self.datasets[which[j]])
            inner[j] = self._perm(int(which[j]), int(c[j] // n))[c[j] % n]
        return which, inner

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        which, inner = self.source(idx)
        out: dict[str, torch.Tensor] | None = None
        for d in np.unique(which):
            rows = np.flatnonzero(which == d)
            part = _stack_items(self.datasets[int(d)], inner[rows])
            if out is None:
                out = {k: torch.empty((len(idx),) + tuple(v.shape[1:]), dtype=v.dtype) for k, v in part.items()}
            for k, v in part.items():
                out[k][torch.from_numpy(rows)] = v
        if out is None:  # no indices: empty tensors of the item layout
            item = next(d for d in self.datasets if len(d))[0]
            out = {k: torch.empty((0,) + tuple(v.shape), dtype=v.dtype) for k, v in item.items()}
        out["position"] = torch.from_numpy(idx.copy())
        return out


# --- sampler and loader ------------------------------------------------------------------------------------
class ResumableSampler(Sampler[list[int]]):
    """Yields this rank's batches (lists of sample indices) of a seeded, resumable epoch order.

    The global order of epoch ``e`` is a permutation seeded by ``(seed, e)`` (identity if not ``shuffle``).
    Global batches are consecutive runs of ``batch_size * world_size`` samples of it starting at ``start``
    (samples of this epoch already consumed, by all ranks together); rank ``r`` takes the slice
    ``[r*batch_size, (r+1)*batch_size)`` of each. So ``world_size`` ranks see together exactly the batches
    one process sees with ``batch_size * world_size``, and resuming at ``start`` continues exactly where an
    uninterrupted run would be. ``drop_last`` drops a final partial global batch; otherwise it is split in
    ceil-sized slices (a rank may get a smaller or no last batch). ``infinite``: continue with epochs
    ``epoch+1, ...`` (from position 0) forever. :meth:`locate` maps a total sample count to ``(epoch, start)``.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, epoch: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                 infinite: bool = False) -> None:
        if num_samples <= 0:
            raise ConfigError(f"the dataset is empty (num_samples={num_samples})")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size={world_size}), got rank {rank}")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.shuffle, self.drop_last, self.infinite = shuffle, drop_last, infinite
        self.global_batch = self.batch_size * self.world_size
        if drop_last and self.num_samples < self.global_batch:
            raise ConfigError(f"{self.num_samples} samples are fewer than one global batch of {self.global_batch} "
                              f"(batch_size {batch_size} x world_size {world_size}) with drop_last")
        self.set_epoch(epoch, start)

    @property
    def epoch_samples(self) -> int:
        """Samples consumed (all ranks) by one full epoch."""
        if self.drop_last:
            return self.num_samples // self.global_batch * self.global_batch
        return self.num_samples

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        if not 0 <= start <= self.epoch_samples:
            raise ConfigError(f"start must be in [0, {self.epoch_samples}] (samples per epoch), got {start}")
        self.epoch, self.start = int(epoch), int(start)

    def locate(self, consumed: int) -> tuple[int, int]:
        """(epoch, start) after ``consumed`` samples in total (all ranks, from epoch 0 position 0), for
        :meth:`set_epoch` when resuming a run that crossed epochs."""
        return divmod(int(consumed), self.epoch_samples)

    def order(self, epoch: int) -> np.ndarray:
        """The global sample order of ``epoch`` (int64 [num_samples])."""
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples).astype(np.int64)

    def _epoch_batches(self, epoch: int, start: int) -> Iterator[list[int]]:
        order, G, b = self.order(epoch), self.global_batch, self.batch_size
        end = self.epoch_samples
        for lo in range(start, end, G):
            gb = order[lo:min(lo + G, end)]
            if len(gb) < G:
                if self.drop_last:
                    return
                b = -(-len(gb) // self.world_size)
            mine = gb[self.rank * b:(self.rank + 1) * b]
            if len(mine):
                yield mine.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        epoch, start = self.epoch, self.start
        while True:
            yield from self._epoch_batches(epoch, start)
            if not self.infinite:
                return
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        if self.infinite:
            raise TypeError("an infinite ResumableSampler has no length")
        n = self.epoch_samples - self.start
        full, rest = divmod(n, self.global_batch)
        if rest and not self.drop_last:
            b = -(-rest // self.world_size)
            full += int(self.rank * b < rest)
        return full


class _BatchedView(Dataset):
    """Index = a list of sample indices -> the batch (so one worker task gathers a whole batch at once)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return _stack_items(self.dataset, np.asarray(indices, dtype=np.int64))


def _identity(batch: Any) -> Any:
    return batch


def make_loader(dataset: Any, batch_size: int, *, seed: int, epoch: int = 0, start: int = 0, rank: int = 0,
                world_size: int = 1, shuffle: bool = True, drop_last: bool = True, infinite: bool = False,
                num_workers: int = 0, pin_memory: bool | None = None, prefetch_factor: int | None = None,
                persistent_workers: bool = False, multiprocessing_context: Any = None) -> DataLoader:
    """A ``DataLoader`` of batches (dicts, batch contract) over ``dataset`` in :class:`ResumableSampler`
    order (same arguments). Each batch is built by one ``dataset.get_batch`` call (one C++ gather per store);
    datasets without ``get_batch`` are collated item by item. ``pin_memory`` defaults to CUDA availability;
    ``prefetch_factor`` (batches per worker, default 4) applies with ``num_workers > 0``. ``loader.sampler``
    is the ResumableSampler (``set_epoch(epoch, start)`` before iterating again).
    """
    sampler = ResumableSampler(len(dataset), batch_size, seed=seed, epoch=epoch, start=start, rank=rank,
                               world_size=world_size, shuffle=shuffle, drop_last=drop_last, infinite=infinite)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw.update(prefetch_factor=4 if prefetch_factor is None else prefetch_factor,
                  persistent_workers=persistent_workers, multiprocessing_context=multiprocessing_context)
    return DataLoader(_BatchedView(dataset), batch_size=None, sampler=sampler, collate_fn=_identity,
                      num_workers=num_workers, pin_memory=pin_memory, **kw)
