"""A resumable, block-committed ``.npy`` output: a directory with the array, a JSON header and one
done-marker per block.

Rows of block b are written through a memory map, flushed, and only then is ``blocks/b`` created
(atomically, by rename). A killed run leaves the blocks without a marker, which the next run redoes; a
run with other settings (header mismatch) refuses to resume unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pyretro.errors import MismatchError, StoreError
from pyretro.retrieval.dist import barrier, on_rank0, rank_world

HEADER = "header.json"
ARRAY = "data.npy"
BLOCKS = "blocks"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise StoreError(f"{path}: missing ({what} header)")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: corrupt JSON ({e})") from e


class BlockArray:
    """``root/data.npy`` of ``shape``/``dtype``, written in blocks of ``block_rows`` rows.

    An existing array with the same settings is resumed; with other settings it is an error, unless
    ``overwrite`` (always rebuild) or ``rebuild_stale`` (rebuild only then; ``pyretro db build``)."""

    def __init__(self, root: str | os.PathLike, kind: str, shape: tuple[int, ...], dtype: Any,
                 block_rows: int, settings: dict, overwrite: bool = False, fill: Any = 0,
                 rebuild_stale: bool = False):
        self.root = Path(root)
        self.kind = kind
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.block_rows = max(1, int(block_rows))
        self.num_blocks = -(-self.shape[0] // self.block_rows)
        header = {"format": f"pyretro.{kind}", "version": 1, "shape": list(self.shape),
                  "dtype": self.dtype.name, "block_rows": self.block_rows, "complete": False, **settings}
        on_rank0(self._prepare, header, overwrite, fill, rebuild_stale)  # every rank raises rank 0's error
        self.header = read_json(self.root / HEADER, kind)
        self.array = np.load(self.root / ARRAY, mmap_mode="r+")

    def _prepare(self, header: dict, overwrite: bool, fill: Any, rebuild_stale: bool) -> None:
        hfile = self.root / HEADER
        if hfile.is_file() and (self.root / ARRAY).is_file() and not overwrite:
            old = read_json(hfile, self.kind)
            diff = {k for k in set(old) | set(header) if k != "complete" and old.get(k) != header.get(k)}
            if not diff:
                return  # resume
            if not rebuild_stale:
                raise MismatchError(f"{self.root}: exists with other settings ({', '.join(sorted(diff))}); "
                                    "pass overwrite=True (--overwrite) to rebuild it")
        if self.root.exists():
            if not (hfile.is_file() or (self.root.is_dir() and not any(self.root.iterdir()))):
                raise StoreError(f"{self.root}: exists and is not a pyretro {self.kind}; refusing to replace it")
            shutil.rmtree(self.root)
        tmp = self.root.with_name(f".{self.root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        tmp.mkdir(parents=True)
        (tmp / BLOCKS).mkdir()
        arr = np.lib.format.open_memmap(tmp / ARRAY, mode="w+", dtype=self.dtype, shape=self.shape)
        if fill != 0 and arr.size:
            arr[...] = fill
        arr.flush()
        del arr
        write_json_atomic(tmp / HEADER, header)
        os.replace(tmp, self.root)

    def rows(self, b: int) -> tuple[int, int]:
        return b * self.block_rows, min((b + 1) * self.block_rows, self.shape[0])

    def is_done(self, b: int) -> bool:
        return (self.root / BLOCKS / f"{b:08d}").exists()

    def pending(self, blocks: Iterator[int] | range) -> list[int]:
        return [b for b in blocks if not self.is_done(b)]

    def commit(self, b: int, values: np.ndarray) -> None:
        lo, hi = self.rows(b)
        self.array[lo:hi] = values
        self.array.flush()  # data durable before the marker says so
        marker = self.root / BLOCKS / f"{b:08d}"
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
        tmp.touch()
        os.replace(tmp, marker)

    def finish(self) -> bool:
        """After all ranks are done: rank 0 marks the header complete if every block is. True if complete."""
        barrier()
        complete = all(self.is_done(b) for b in range(self.num_blocks))
        rank, _ = rank_world()
        if complete and rank == 0 and not self.header.get("complete"):
            self.header["complete"] = True
            write_json_atomic(self.root / HEADER, self.header)
        barrier()
        return complete


def open_block_array(root: str | os.PathLike, kind: str) -> tuple[dict, np.ndarray]:
    """(header, read-only mmap array) of a finished block array; StoreError if missing or incomplete."""
    root = Path(root)
    header = read_json(root / HEADER, kind)
    if header.get("format") != f"pyretro.{kind}":
        raise StoreError(f"{root}: not a pyretro {kind} (format {header.get('format')!r})")
    if not header.get("complete"):
        raise StoreError(f"{root}: incomplete {kind} (a run was interrupted): rerun the same command to resume")
    arr = np.load(root / ARRAY, mmap_mode="r")
    if list(arr.shape) != header["shape"] or arr.dtype.name != header["dtype"]:
        raise StoreError(f"{root / ARRAY}: shape/dtype {arr.shape}/{arr.dtype} do not match the header")
    return header, arr
