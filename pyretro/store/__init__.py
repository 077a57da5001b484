"""The chunk store: a Retro retrieval database of tokenized documents cut into fixed-length chunks.

``ChunkStoreWriter`` streams documents into a new store (atomic finalize); ``ChunkStore.open`` maps a
finished one read-only; ``ChunkStore.gather`` returns chunks + continuations for neighbour ids.
Format and semantics: docs/store.md.
"""

from __future__ import annotations

from pyretro.store.importers import import_numpy, merge_stores
from pyretro.store.megatron import import_megatron
from pyretro.store.reader import ChunkStore
from pyretro.store.writer import ChunkStoreWriter

__all__ = ["ChunkStore", "ChunkStoreWriter", "import_megatron", "import_numpy", "merge_stores"]
