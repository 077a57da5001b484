"""The vectorized 8-gram leakage filter against a brute-force search, and its mapping onto target tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyretro.eval.leakage import leaky_chunks
from pyretro.eval.perplexity import leaky_token_mask


def brute(chunks, neighbors, mask, w):
    out = []
    for c, nb, mk in zip(chunks, neighbors, mask, strict=True):
        grams = set()
        for k in range(nb.shape[0]):
            for s in range(nb.shape[1] - w + 1):
                if mk[k, s: s + w].all() and (nb[k, s: s + w] >= 0).all():
                    grams.add(tuple(nb[k, s: s + w]))
        out.append(any(tuple(c[s: s + w]) in grams and (c[s: s + w] >= 0).all() for s in range(len(c) - w + 1)))
    return np.array(out, dtype=bool)


@pytest.mark.parametrize("w", [1, 3, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(w, seed):
    rng = np.random.default_rng(seed)
    n, m, K, r = 200, 12, 3, 20
    vocab = {1: 2000, 3: 20, 8: 3}[w]  # chance matches common, yet not everywhere
    chunks = rng.integers(0, vocab, (n, m))
    nb = rng.integers(0, vocab, (n, K, r))
    # plant exact runs of w and of w - 1 tokens (the latter must not count by itself)
    for i in rng.choice(n, n // 3, replace=False):
        length = w if rng.random() < 0.5 else max(w - 1, 1)
        s, t, k = rng.integers(0, m - length + 1), rng.integers(0, r - length + 1), rng.integers(0, K)
        nb[i, k, t: t + length] = chunks[i, s: s + length]
    nb[rng.random((n, K, r)) < 0.05] = -1
    chunks[rng.random((n, m)) < 0.02] = -1
    mask = rng.random((n, K, r)) > 0.1
    got = leaky_chunks(chunks, nb, mask, w)
    want = brute(chunks, nb, mask, w)
    assert 0 < want.sum() < n  # both outcomes occur
    np.testing.assert_array_equal(got, want)
    # per-neighbour masks [n, K] and torch inputs give the same as the expanded mask
    kmask = rng.random((n, K)) > 0.3
    np.testing.assert_array_equal(leaky_chunks(torch.from_numpy(chunks), torch.from_numpy(nb), torch.from_numpy(kmask), w),
                                  brute(chunks, nb, np.broadcast_to(kmask[..., None], nb.shape), w))


def test_neighbors_of_another_row_never_count():
    chunks = np.arange(16).reshape(2, 8)
    nb = np.stack([chunks[1], chunks[0]])[:, None, :]  # row 0's neighbour is row 1's chunk and vice versa
    assert not leaky_chunks(chunks, nb, None, 8).any()
    assert leaky_chunks(chunks, nb[::-1], None, 8).all()


def test_edge_cases_and_errors():
    assert leaky_chunks(np.zeros((0, 8), np.int64), np.zeros((0, 2, 8), np.int64)).shape == (0,)
    assert not leaky_chunks(np.ones((2, 4), np.int64), np.ones((2, 1, 16), np.int64), min_overlap=8).any()
    with pytest.raises(ValueError, match="min_overlap"):
        leaky_chunks(np.ones((1, 8), np.int64), np.ones((1, 1, 8), np.int64), min_overlap=0)
    with pytest.raises(ValueError, match="same n"):
        leaky_chunks(np.ones((2, 8), np.int64), np.ones((1, 1, 8), np.int64))
    with pytest.raises(TypeError, match="integer"):
        leaky_chunks(np.ones((1, 8)), np.ones((1, 1, 8), np.int64))


def test_token_mask_uses_the_previous_chunks_neighbours():
    m, S, K, r = 4, 16, 1, 6
    tokens = torch.arange(100, 100 + S)[None]
    nb = torch.full((1, S // m, K, r), 7)
    nb[0, 1, 0, 1:5] = tokens[0, 8:12]  # chunk 2's tokens among the neighbours of chunk 1 -> chunk 2 leaks
    nb[0, 3, 0, 0:4] = tokens[0, 12:16]  # chunk 3's tokens among its OWN neighbours: not read for chunk 3
    per_target, flags = leaky_token_mask(tokens, nb, None, m, min_overlap=4)
    assert flags.tolist() == [[False, True, False]]  # chunks 1..3
    want = torch.zeros(1, S - 1, dtype=torch.bool)
    want[0, 7:11] = True  # targets tokens[8:12] sit at target index j - 1
    assert torch.equal(per_target, want)
