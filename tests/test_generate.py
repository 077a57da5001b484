"""Generation: the KV-cached path equals recomputing the full sequence, for GPT and Retro (re-retrieval,
fixed neighbours, left-padded batches, sampling), plus sampling filters and stop tokens."""

from __future__ import annotations

import pytest
import torch

from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel
from pyretro.model.generate import generate, make_provider, prompt_neighbors, sample

V = 53
M = 4  # chunk length


def models(seed=0, cca_rotary=False, cca_kv_heads=None, cca_qk_norm=False, cca_position_bias=None):
    torch.manual_seed(seed)
    gpt = GPT(GPTConfig(vocab_size=V, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, rotary_fraction=0.5,
                        max_seq_len=128)).double().eval()
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=M, neighbor_len=6, cca_layers=(2, 3),
                                                 encoder_d_model=16, encoder_heads=2, cca_rotary=cca_rotary,
                                                 cca_kv_heads=cca_kv_heads, cca_qk_norm=cca_qk_norm,
                                                 cca_position_bias=cca_position_bias)).eval()
    for c in model.cca:
        torch.nn.init.normal_(c.o.weight, 0.0, 0.3)
    return gpt, model


class Retriever:
    """Deterministic fake retriever: neighbours are a hash of the chunk; records every call."""

    def __init__(self):
        self.calls: list[torch.Tensor] = []

    def __call__(self, chunk_tokens):
        self.calls.append(chunk_tokens.clone())
        s = (chunk_tokens * torch.arange(1, M + 1)).sum(1)
        nb = (s[:, None, None] * torch.tensor([1, 3])[None, :, None] + torch.arange(6)[None, None]) % V
        mask = torch.ones_like(nb, dtype=torch.bool)
        mask[s % 3 == 0, 1] = False  # some chunks have only one neighbour
        return nb, mask


PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7], [5, 4, 5, 4, 5, 4, 5, 4, 5, 4], [11, 12, 13, 14]]


@pytest.mark.parametrize("rotary, kv_heads, qk_norm, pos_bias", [
    (False, None, False, None), (True, None, False, None), (True, 2, False, None), (True, 2, True, None),
    (False, None, False, 3.0), (True, 2, True, 3.0)])
def test_cached_logits_equal_full_recompute_with_re_retrieval(rotary, kv_heads, qk_norm, pos_bias):
    _, model = models(cca_rotary=rotary, cca_kv_heads=kv_heads, cca_qk_norm=qk_norm, cca_position_bias=pos_bias)
    if qk_norm:  # non-trivial norm scales, so a path that skipped a norm would differ
        for c in model.cca:
            torch.nn.init.uniform_(c.q_norm.weight, 0.5, 2.0)
            torch.nn.init.uniform_(c.k_norm.weight, 0.5, 2.0)
    if pos_bias is not None:  # a bias that differs per head, query index and key position
        for c in model.cca:
            torch.nn.init.normal_(c.pos_bias, 0.0, 2.0)
    from pyretro.model.generate import _left_pad

    tokens, mask = _left_pad(PROMPTS, 0, "cpu")
    pad = (~mask).sum(1)
    provider = make_provider(Retriever())
    state = model.new_state(len(PROMPTS), tokens.shape[1] + 14, provider)
    with torch.no_grad():
        nb, nm = prompt_neighbors(provider, tokens, pad, M)
        step_logits = model(tokens, nb, nm, attention_mask=mask, state=state)[:, -1]
        g = torch.Generator().manual_seed(0)
        for _ in range(14):
            full = model(tokens, *prompt_neighbors(provider, tokens, pad, M), attention_mask=mask)[:, -1]
            torch.testing.assert_close(step_logits, full, rtol=1e-9, atol=1e-9)
            nxt = torch.randint(0, V, (len(PROMPTS),), generator=g)
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones(len(PROMPTS), 1, dtype=torch.bool)], 1)
            step_logits = model(nxt[:, None], state=state)[:, -1]


def test_generate_cache_equals_no_cache_with_re_retrieval():
    gpt, model = models()
    r1, r2 = Retriever(), Retriever()
    a = generate(model, PROMPTS, max_new_tokens=18, retriever=r1)
    b = generate(model, PROMPTS, max_new_tokens=18, retriever=r2, use_cache=False)
    assert a == b and all(len(x) == 18 for x in a)
    assert generate(model, PROMPTS, max_new_tokens=18, retrieval=False) == generate(gpt, PROMPTS, max_new_tokens=18)
    assert a != generate(gpt, PROMPTS, max_new_tokens=18)  # retrieval does steer the text
    # the cached path retrieves each completed chunk of each row exactly once, with that chunk's tokens
    total = [len(p) + 17 for p in PROMPTS]  # the last sampled token is never fed back
    assert sum(c.shape[0] for c in r1.calls) == sum(t // M for t in total)
    row0 = PROMPTS[0] + a[0]
    seen = {tuple(x) for c in r1.calls for x in c.tolist()}
    for u in range(total[0] // M):
        assert tuple(row0[u * M:(u + 1) * M]) in seen


@pytest.mark.parametrize("per_chunk", [False, True])
def test_generate_fixed_neighbours_cache_equals_no_cache(per_chunk):
    _, model = models(seed=1)
    g = torch.Generator().manual_seed(5)
    B = len(PROMPTS)
    shape = (B, 3, 2, 6) if per_chunk else (B, 2, 6)
    nb = torch.randint(0, V, shape, generator=g)
    mask = torch.rand(shape[:-1], generator=g) > 0.3
    a = generate(model, PROMPTS, max_new_tokens=16, neighbors=nb, neighbor_mask=mask)
    b = generate(model, PROMPTS, max_new_tokens=16, neighbors=nb, neighbor_mask=mask, use_cache=False)
    assert a == b


def test_gpt_sampling_cache_equals_no_cache():
    gpt, model = models()
    for net, kw in ((gpt, {}), (model, dict(retriever=Retriever()))):
        a = generate(net, PROMPTS, max_new_tokens=12, temperature=0.9, top_k=20, top_p=0.9,
                     generator=torch.Generator().manual_seed(7), **kw)
        b = generate(net, PROMPTS, max_new_tokens=12, temperature=0.9, top_k=20, top_p=0.9, use_cache=False,
                     generator=torch.Generator().manual_seed(7), **kw)
        assert a == b


def test_learned_positions_gpt2_style_cache_equals_no_cache():
    torch.manual_seed(2)
    gpt = GPT(GPTConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=4, position="learned", norm="layernorm",
                        mlp="gelu_tanh", bias=True, max_seq_len=40)).double().eval()
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=M, neighbor_len=6, cca_layers=(1, 2))).eval()
    for c in model.cca:
        torch.nn.init.normal_(c.o.weight, 0.0, 0.3)
    for net, kw in ((gpt, {}), (model, dict(retriever=Retriever()))):
        assert generate(net, PROMPTS, max_new_tokens=12, **kw) == generate(net, PROMPTS, max_new_tokens=12,
                                                                           use_cache=False, **kw)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(gpt, PROMPTS, max_new_tokens=40)


def test_stop_tokens_and_limits():
    gpt, _ = models()
    free = generate(gpt, PROMPTS, max_new_tokens=10)
    stop = free[0][3]
    out = generate(gpt, PROMPTS, max_new_tokens=10, stop_tokens=[stop])
    assert out[0] == free[0][: free[0].index(stop)]
    for o, f in zip(out, free, strict=True):
        assert o == f[: f.index(stop)] if stop in f else o == f
    assert generate(gpt, PROMPTS, max_new_tokens=0) == [[], [], [], []]
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(gpt, PROMPTS, max_new_tokens=-1)
    with pytest.raises(ValueError, match="prompts"):
        generate(gpt, [[1], []])


def test_sample_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert sample(logits[:1]).item() == 4
    topk = sample(logits, temperature=1.0, top_k=2, generator=g)
    assert set(topk.tolist()) == {3, 4}
    p = logits[0].softmax(-1)  # top_p = 0.8: 4 (0.64) alone is short, {4, 3} (0.88) reaches it
    assert p[4] < 0.8 < p[4] + p[3]
    topp = sample(logits, temperature=1.0, top_p=0.8, generator=g)
    assert set(topp.tolist()) == {3, 4}
    full = sample(logits, temperature=1.0, generator=g)
    assert len(set(full.tolist())) == 5
