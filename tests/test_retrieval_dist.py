"""torch.distributed: 2 gloo ranks embed and query their blocks; the result equals one process's."""

from __future__ import annotations

import numpy as np
import pytest
from _retrieval_fixtures import make_store

from pyretro.errors import MismatchError
from pyretro.retrieval import HashingEmbedder, NeighborTable, build_index, build_neighbor_table, embed_store
from pyretro.retrieval.embed import open_embeddings

pytest.importorskip("faiss")


def _worker(rank: int, world: int, root: str) -> None:
    import torch.distributed as dist

    from pyretro.retrieval.index import load_index
    from pyretro.store import ChunkStore

    dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=rank, world_size=world)
    try:
        from pyretro.retrieval.dist import my_blocks, rank_world

        store = ChunkStore.open(f"{root}/store")
        with open(f"{root}/rank{rank}", "w") as f:  # what this rank believes it owns
            f.write(f"{rank_world()} {list(my_blocks(4))}")
        embed_store(store, HashingEmbedder(dim=24), f"{root}/emb_dist", block_size=7, progress=False)
        _, E = open_embeddings(f"{root}/emb_dist", store)
        index, ih = load_index(f"{root}/index")
        build_neighbor_table(f"{root}/nb_dist", index, E, store, k=4, block_size=5, index_header=ih, progress=False)
        try:  # rank 0 finds the mismatch; every rank must raise it rather than hang in a barrier
            embed_store(store, HashingEmbedder(dim=8), f"{root}/emb_dist", block_size=7, progress=False)
        except MismatchError:
            open(f"{root}/raised{rank}", "w").close()
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_single_process(tmp_path):
    import torch.multiprocessing as mp

    store = make_store(tmp_path / "store", num_docs=16, seed=5)
    emb = HashingEmbedder(dim=24)
    embed_store(store, emb, tmp_path / "emb", block_size=7, progress=False)
    _, E = open_embeddings(tmp_path / "emb", store)
    index, ih = build_index(E, tmp_path / "index", header={"store_id": store.store_id}, progress=False)
    build_neighbor_table(tmp_path / "nb", index, E, store, k=4, block_size=5, index_header=ih, progress=False)

    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)

    _, E2 = open_embeddings(tmp_path / "emb_dist", store)
    np.testing.assert_array_equal(E2, E)
    np.testing.assert_array_equal(NeighborTable(tmp_path / "nb_dist", store).neighbors,
                                  NeighborTable(tmp_path / "nb", store).neighbors)
    assert (tmp_path / "rank0").read_text() == "(0, 2) [0, 2]"
    assert (tmp_path / "rank1").read_text() == "(1, 2) [1, 3]"
    assert (tmp_path / "raised0").exists() and (tmp_path / "raised1").exists()
    assert len(list((tmp_path / "emb_dist" / "blocks").iterdir())) == -(-len(store) // 7)
