"""Corpora for pyretro: the synthetic-knowledge corpus (``pyretro.data.synthetic``), tokenizers
(``pyretro.data.tokenizer``), and ingestion into a chunk store (``pyretro.data.ingest.ingest``).

The submodules are not re-exported here, so ``pyretro.data.ingest`` stays the module (not the function).
"""
