"""Perplexity: equals exp of a hand-computed token-weighted mean CE; retrieval on/off; leakage subsets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _eval_fixtures import CHUNK, tiny_models

from pyretro.eval import evaluate_perplexity

V, S, K, R = 61, 4 * CHUNK, 2, 2 * CHUNK


class ListDataset:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def make_data(n=5, seed=0, neighbors=True, leak_every=2):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        tokens = torch.randint(0, V, (S,), generator=g)
        lm = torch.rand(S, generator=g) > 0.2
        it = {"tokens": tokens, "loss_mask": lm}
        if neighbors:
            nb = torch.randint(0, V, (S // CHUNK, K, R), generator=g)
            if i % leak_every == 0:  # chunk 2 leaks into the neighbours (with continuation) of chunk 1
                nb[1, 1, 3: 3 + CHUNK] = tokens[2 * CHUNK: 3 * CHUNK]
            it["neighbors"] = nb
            it["neighbor_mask"] = torch.rand(S // CHUNK, K, R, generator=g) > 0.1
            it["neighbor_mask"][1, 1] = True
        items.append(it)
    return ListDataset(items)


def hand_nll(logits_fn, data, select=None):
    total, count = 0.0, 0
    for i in range(len(data)):
        it = data[i]
        logp = F.log_softmax(logits_fn(it).double(), -1)[0, :-1]
        nll = -logp.gather(-1, it["tokens"][1:, None])[:, 0]
        keep = it["loss_mask"][1:].clone()
        if select is not None:
            keep &= select(i)
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return total / count, count


def test_gpt_perplexity_is_exp_of_hand_computed_mean_ce():
    gpt, _ = tiny_models(V)
    data = make_data(neighbors=False)
    res = evaluate_perplexity(gpt, data, batch_size=3, progress=False)
    with torch.no_grad():
        want, count = hand_nll(lambda it: gpt(it["tokens"][None]), data)
    assert res.mode == "gpt" and res.tokens == count and res.samples == len(data)
    assert res.nll == pytest.approx(want, rel=1e-5) and res.ppl == pytest.approx(math.exp(want), rel=1e-5)
    assert res.clean is None and res.leaky is None  # no neighbours, no leakage subsets
    assert evaluate_perplexity(gpt, data, batch_size=2, max_samples=3, progress=False).samples == 3


def test_retro_with_and_without_retrieval_and_the_leakage_subsets():
    gpt, retro = tiny_models(V)
    data = make_data()
    with_r = evaluate_perplexity(retro, data, batch_size=4, progress=False)
    without = evaluate_perplexity(retro, data, batch_size=4, retrieval=False, progress=False)
    g = evaluate_perplexity(gpt, data, batch_size=4, progress=False)
    assert (with_r.mode, without.mode) == ("retro", "retro-decoder")
    assert without.nll == pytest.approx(g.nll, rel=1e-5)  # the decoder alone is the GPT it was fitted from
    assert abs(with_r.nll - without.nll) > 1e-3  # the neighbours change the predictions
    with torch.no_grad():
        want, _ = hand_nll(lambda it: retro(it["tokens"][None], it["neighbors"][None], it["neighbor_mask"][None]),
                           data)
    assert with_r.nll == pytest.approx(want, rel=1e-5)
    # leaky samples (even index): targets in chunk 2 = tokens[2m:3m] = target indices 2m-1 .. 3m-2
    leak = torch.zeros(S - 1, dtype=torch.bool)
    leak[2 * CHUNK - 1: 3 * CHUNK - 1] = True

    def leaky(i):
        return leak if i % 2 == 0 else torch.zeros_like(leak)
    with torch.no_grad():
        fn = lambda it: retro(it["tokens"][None], it["neighbors"][None], it["neighbor_mask"][None])  # noqa: E731
        clean_nll, clean_n = hand_nll(fn, data, lambda i: ~leaky(i))
        leaky_nll, leaky_n = hand_nll(fn, data, leaky)
    for res in (with_r, g):  # same subsets for every model
        assert res.leaky_chunks == 3 and res.chunks == 5 * 4
        assert res.clean.tokens == clean_n and res.leaky.tokens == leaky_n
        assert res.clean.tokens + res.leaky.tokens == res.tokens
    assert with_r.clean.nll == pytest.approx(clean_nll, rel=1e-5)
    assert with_r.leaky.nll == pytest.approx(leaky_nll, rel=1e-5)
    assert evaluate_perplexity(retro, data, min_overlap=CHUNK + 1, progress=False).leaky_chunks == 0


def test_gate_rule_restores_a_zero_gate_for_evaluation_and_puts_it_back():
    _, retro = tiny_models(V)
    data = make_data(n=3)
    ref = evaluate_perplexity(retro, data, progress=False)
    retro.set_gate(0.0)
    res = evaluate_perplexity(retro, data, progress=False)
    assert res.settings["gate"] == 1.0 and res.nll == pytest.approx(ref.nll, rel=1e-6)
    assert float(retro.gate) == 0.0 and retro.retro.gate == 0.0
    forced = evaluate_perplexity(retro, data, retro_gate=0.0, progress=False)
    assert forced.nll == pytest.approx(evaluate_perplexity(retro, data, retrieval=False, progress=False).nll, rel=1e-6)


def test_errors():
    gpt, retro = tiny_models(V)
    with pytest.raises(ValueError, match="no samples"):
        evaluate_perplexity(gpt, ListDataset([]), progress=False)
    with pytest.raises(ValueError, match="neighbors"):
        evaluate_perplexity(retro, make_data(n=2, neighbors=False), progress=False)
    with pytest.raises(ValueError, match="no target tokens"):
        evaluate_perplexity(gpt, ListDataset([{"tokens": torch.arange(8), "loss_mask": torch.zeros(8, dtype=torch.bool)}]),
                            progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_perplexity(gpt, make_data(n=2), batch_size=0, progress=False)


def test_data_chunked_finer_than_the_model_is_refused():
    """Neighbours of half-size chunks would be read by the model as those of its own chunks (silently wrong)."""
    _, retro = tiny_models(V)
    g = torch.Generator().manual_seed(3)
    fine = ListDataset([{"tokens": torch.randint(0, V, (S,), generator=g),
                         "neighbors": torch.randint(0, V, (2 * S // CHUNK, K, R), generator=g)}])
    with pytest.raises(ValueError, match="chunked differently"):
        evaluate_perplexity(retro, fine, progress=False)
    fine.chunk_len = CHUNK // 2  # a RetroDataset of another store says so up front
    with pytest.raises(ValueError, match="chunk_len"):
        evaluate_perplexity(retro, fine, progress=False)
    assert evaluate_perplexity(retro, fine, retrieval=False, progress=False).tokens == S - 1  # decoder alone: fine
