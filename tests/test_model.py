"""pyretro.model: configs, GPT/Retro equivalences, causality, masks, padding, save/load."""

from __future__ import annotations

import pytest
import torch

from pyretro.errors import ConfigError, MismatchError
from pyretro.model import GPT, GPTConfig, RetroConfig, RetroModel, default_cca_layers, lm_loss, ops_backend
from pyretro.model.io import load, save

V = 61


def tiny_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, rotary_fraction=0.5, max_seq_len=128)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).double().eval()


def tiny_retro(seed: int = 0, gpt_kw=None, live: bool = True, **kw) -> tuple[GPT, RetroModel]:
    gpt = tiny_gpt(seed, **(gpt_kw or {}))
    rc = dict(chunk_len=4, num_neighbors=2, neighbor_len=6, cca_layers=(2, 4), encoder_d_model=16, encoder_heads=2)
    rc.update(kw)
    model = RetroModel.from_gpt(gpt, RetroConfig(**rc)).eval()
    if live:  # give CCA a non-zero output so retrieval actually changes the logits
        torch.manual_seed(seed + 1)
        for c in model.cca:
            torch.nn.init.normal_(c.o.weight, 0.0, 0.2)
    return gpt, model


def inputs(B=2, N=19, L=None, K=2, r=6, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = -(-N // m) if L is None else L
    return torch.randint(0, V, (B, N), generator=g), torch.randint(0, V, (B, L, K, r), generator=g)


# ------------------------------------------------------------------ configs
def test_default_cca_layers_follow_megatron():
    assert default_cca_layers(12) == (6, 9, 12)
    assert default_cca_layers(15) == (6, 9, 12, 15)
    assert default_cca_layers(16) == (9, 12, 15)
    assert default_cca_layers(24) == (9, 12, 15, 18, 21, 24)
    assert RetroConfig().resolved_cca_layers(12) == (6, 9, 12)
    assert RetroConfig().r == 128 and RetroConfig(chunk_len=16).r == 32


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(d_model=30, n_heads=4), "n_heads"),
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
        (dict(mlp="relu"), "mlp"),
        (dict(norm="batchnorm"), "norm"),
        (dict(rotary_fraction=1.5), "rotary_fraction"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(position="alibi"), "position"),
    ],
)
def test_bad_gpt_config(kw, field):
    base = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4)
    base.update(kw)
    with pytest.raises(ConfigError, match=field):
        GPTConfig(**base)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(cca_layers=(0, 2)), "1-based"),
        (dict(cca_layers=(3, 5)), r"\[1, 4\]"),
        (dict(cca_layers=(3, 2)), "increasing"),
        (dict(), "no chunked cross-attention layer"),  # default starts at layer 6 > 4 layers
        (dict(chunk_len=0, cca_layers=(2,)), "chunk_len"),
        (dict(encoder_d_model=18, encoder_heads=4, cca_layers=(2,)), "encoder_heads"),
        (dict(cca_kv_heads=3, cca_layers=(2,)), "cca_kv_heads"),
        (dict(cca_kv_heads=0, cca_layers=(2,)), "cca_kv_heads"),
    ],
)
def test_bad_retro_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        RetroModel(tiny_gpt().config, RetroConfig(**kw))


def test_config_dict_round_trip_and_unknown_field():
    rc = RetroConfig(cca_layers=(2, 4), chunk_len=8)
    assert RetroConfig.from_dict(rc.to_dict()) == rc
    with pytest.raises(ConfigError, match="unknown field"):
        GPTConfig.from_dict({"vocab_size": 10, "d_modle": 8})


# ------------------------------------------------------------------ equivalences
def test_retrofit_equals_gpt_at_init():
    gpt, model = tiny_retro(live=False)
    tokens, nb = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, nb), gpt(tokens), rtol=0, atol=1e-12)
    # ...and the retrieval path does run: a live CCA changes the logits past the first chunk
    _, live = tiny_retro()
    with torch.no_grad():
        assert (live(tokens, nb) - gpt(tokens)).abs()[:, 3:].amax() > 1e-3


def test_decoder_only_modes_equal_gpt():
    gpt, model = tiny_retro()
    tokens, nb = inputs()
    with torch.no_grad():
        ref = gpt(tokens)
        torch.testing.assert_close(model(tokens), ref, rtol=0, atol=0)
        torch.testing.assert_close(model(tokens, nb, retrieval=False), ref, rtol=0, atol=0)
        model.set_gate(0.0)
        torch.testing.assert_close(model(tokens, nb), ref, rtol=0, atol=0)
        model.set_gate(0.5)
        half = model(tokens, nb)
        model.set_gate(1.0)
        full = model(tokens, nb)
    assert not torch.allclose(half, full)


def test_compiled_gate_follows_set_gate_and_loaded_state():
    """Compiled forwards read the gate's Python mirror (no host sync): set_gate and a loaded state dict must
    both reach it, or a compiled model would keep running (or skipping) retrieval after the gate changed."""
    gpt, model = tiny_retro()
    gpt, model = gpt.float(), model.float()
    tokens, nb = inputs()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        ref, live = gpt(tokens), model(tokens, nb)
        torch.testing.assert_close(compiled(tokens, nb), live)
        model.set_gate(0.0)
        torch.testing.assert_close(compiled(tokens, nb), ref)
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        model.set_gate(1.0)
        torch.testing.assert_close(compiled(tokens, nb), live)
        model.load_state_dict(sd)  # gate 0 from the file
        assert model.retro.gate == 0.0
        torch.testing.assert_close(compiled(tokens, nb), ref)
    # models built from one RetroConfig keep their own gates
    rc = RetroConfig(chunk_len=4, num_neighbors=2, neighbor_len=6, cca_layers=(2, 4))
    a, b = RetroModel.from_gpt(gpt, rc), RetroModel.from_gpt(gpt, rc)
    a.set_gate(0.0)
    assert b.retro.gate == 1.0 and rc.gate == 1.0


def test_freeze_decoder():
    gpt = tiny_gpt()
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=4, cca_layers=(2,)), freeze_decoder=True)
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.cca.parameters())


def test_frozen_decoder_gets_no_gradients():
    gpt = tiny_gpt()
    model = RetroModel.from_gpt(gpt, RetroConfig(chunk_len=4, neighbor_len=6, cca_layers=(2, 4)), freeze_decoder=True)
    model.train()
    tokens, nb = inputs()
    lm_loss(model(tokens, nb), tokens).backward()
    assert all(p.grad is None for p in model.decoder.parameters())
    assert model.cca[0].o.weight.grad.abs().sum() > 0  # zero-initialised, but its gradient is not zero
    assert all(p.grad is not None for p in model.cca.parameters())


def test_bfloat16_forward_close_to_float32():
    _, model = tiny_retro()
    model.float()
    tokens, nb = inputs()
    with torch.no_grad():
        ref = model(tokens, nb)
        low = model.to(torch.bfloat16)(tokens, nb)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.08)


def test_fused_ops_match_reference_ops():
    _, model = tiny_retro(gpt_kw=dict(), cca_rotary=True)
    tokens, nb = inputs(N=23)
    with torch.no_grad():
        with ops_backend(True):
            a = model(tokens, nb)
        with ops_backend(False):
            b = model(tokens, nb)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_cca_fused_matches_reference_fwd_bwd(kv_heads):
    _, model = tiny_retro(cca_rotary=True, cca_kv_heads=kv_heads)
    c = model.cca[0]
    assert c.n_kv_heads == kv_heads and c.kv.weight.shape == (2 * kv_heads * c.head_dim, 16)
    tokens, nb = inputs(N=23)
    nm = torch.rand(nb.shape, generator=torch.Generator().manual_seed(3)) < 0.8
    grads = []
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        with ops_backend(fused):
            out = model(tokens, nb, nm)
            out.square().mean().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = grads
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert ga.keys() == gb.keys() and "cca.0.kv.weight" in ga and ga["cca.0.kv.weight"].abs().sum() > 0
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=1e-8, atol=1e-10, msg=n)


def test_cca_qk_norm_normalizes_query_and_key_heads_and_trains(tmp_path):
    gpt, model = tiny_retro(cca_qk_norm=True, live=False)
    tokens, nb = inputs(N=21)
    with torch.no_grad():  # o starts at zero: the retro-fit still computes its GPT exactly
        torch.testing.assert_close(model(tokens, nb), gpt(tokens), rtol=1e-10, atol=1e-10)
    c = model.cca[0]
    torch.nn.init.normal_(c.o.weight, 0.0, 0.3)
    enc = torch.randn(3, 2, 5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    keys = []
    with torch.no_grad():
        for scale in (10.0, 1000.0):  # a scaled key projection gives the same keys after the norm
            w0 = c.kv.weight.clone()
            c.kv.weight.mul_(scale)
            keys.append(c.keys_values(enc)[0])
            c.kv.weight.copy_(w0)
    k = keys[0]
    torch.testing.assert_close(keys[1], k, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(k.pow(2).mean(-1), torch.ones_like(k[..., 0]), rtol=1e-4, atol=1e-4)
    model(tokens, nb).square().mean().backward()
    assert c.q_norm.weight.grad.abs().sum() > 0 and c.k_norm.weight.grad.abs().sum() > 0
    save(model, tmp_path / "m.safetensors")
    back = load(tmp_path / "m.safetensors")
    assert back.retro.cca_qk_norm and torch.equal(back.cca[0].q_norm.weight, c.q_norm.weight)


def test_cca_position_bias_init_effect_training_and_io(tmp_path):
    """Aligned init (chunk_len + i), a retro-fit still equals its GPT, the bias changes CCA outputs, gets
    gradients, is not weight-decayed, and survives save/load."""
    from pyretro.train.config import OptimSection
    from pyretro.train.optim import build_optimizer

    gpt, model = tiny_retro(cca_position_bias=2.5, live=False)
    b = model.cca[0].pos_bias
    assert b.shape == (4, 4, 6)  # [heads, chunk_len, neighbor_len]
    want = torch.zeros(4, 4, 6, dtype=b.dtype)
    want[:, 0, 4], want[:, 1, 5] = 2.5, 2.5  # chunk_len + i < r only for i = 0, 1
    torch.testing.assert_close(b.detach(), want)
    tokens, nb = inputs(N=21)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, nb), gpt(tokens), rtol=1e-10, atol=1e-10)
    _, plain = tiny_retro(cca_position_bias=None)
    assert plain.cca[0].pos_bias is None
    _, with_bias = tiny_retro(cca_position_bias=2.5)
    with_bias.load_state_dict(plain.state_dict(), strict=False)  # same weights, plus the bias
    with torch.no_grad():
        assert (with_bias(tokens, nb) - plain(tokens, nb)).abs().amax() > 1e-4
    with_bias(tokens, nb).square().mean().backward()
    assert with_bias.cca[0].pos_bias.grad.abs().sum() > 0
    opt = build_optimizer(with_bias, OptimSection(weight_decay=0.1))
    group = next(g for g in opt.param_groups if any(p is with_bias.cca[0].pos_bias for p in g["params"]))
    assert group["weight_decay"] == 0.0
    save(with_bias, tmp_path / "m.safetensors")
    back = load(tmp_path / "m.safetensors")
    assert back.retro.cca_position_bias == 2.5
    torch.testing.assert_close(back.cca[1].pos_bias, with_bias.cca[1].pos_bias)
    with pytest.raises(ValueError, match="cca_position_bias"):
        RetroConfig(cca_position_bias=float("nan"))


def test_grouped_query_cca_equals_full_heads_with_repeated_kv_weights():
    """A 2-kv-head CCA == a full-head CCA whose key/value weights repeat each kv head over its group."""
    _, gqa = tiny_retro(cca_kv_heads=2)
    _, full = tiny_retro()
    full.load_state_dict({k: v for k, v in gqa.state_dict().items() if ".kv." not in k or not k.startswith("cca")},
                         strict=False)
    for cg, cf in zip(gqa.cca, full.cca, strict=True):
        w = cg.kv.weight.unflatten(0, (2, 2, 1, cg.head_dim)).expand(2, 2, 2, cg.head_dim, -1)
        cf.kv.weight.data.copy_(w.reshape(cf.kv.weight.shape))
    tokens, nb = inputs(N=21)
    with torch.no_grad():
        torch.testing.assert_close(gqa(tokens, nb), full(tokens, nb), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ causality
@pytest.mark.parametrize("t", [0, 5, 11, 18])
def test_changing_token_t_changes_nothing_before_t(t):
    _, model = tiny_retro(cca_rotary=True)
    tokens, nb = inputs()
    t2 = tokens.clone()
    t2[:, t] = (t2[:, t] + 1) % V
    with torch.no_grad():
        a, b = model(tokens, nb), model(t2, nb)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)
    assert (a[:, t:] - b[:, t:]).abs().amax() > 1e-6


@pytest.mark.parametrize("u", [0, 1, 3])
def test_changing_chunk_neighbours_changes_nothing_before_its_first_reader(u):
    m = 4
    _, model = tiny_retro()
    tokens, nb = inputs(N=19)
    nb2 = nb.clone()
    nb2[:, u] = (nb2[:, u] + 7) % V
    first = (u + 1) * m - 1
    with torch.no_grad():
        a, b = model(tokens, nb), model(tokens, nb2)
    torch.testing.assert_close(a[:, :first], b[:, :first], rtol=0, atol=0)
    assert (a[:, first] - b[:, first]).abs().amax() > 1e-6


# ------------------------------------------------------------------ masks
def test_missing_neighbour_equals_fewer_neighbours():
    _, model = tiny_retro()
    tokens, nb3 = inputs(K=3)
    mask = torch.ones(nb3.shape[:3], dtype=torch.bool)
    mask[:, :, 2] = False
    mask[0, 1, 0] = False  # and one more missing neighbour in one chunk
    nb_minus = nb3.clone()
    nb_minus[0, 1, 0] = -1  # -1 ids mark missing neighbours too
    with torch.no_grad():
        a = model(tokens, nb3, mask)
        b = model(tokens, nb_minus[:, :, :2])
        nb2 = nb3[:, :, [0, 1]].clone()
        nb2[0, 1, 0] = nb2[0, 1, 1]
        ref = model(tokens, nb3[:, :, :2])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # chunk 1 of row 0 lost a neighbour: nothing before its first reader (t = 7) differs from the 2-neighbour run
    diff = (a - ref).abs().amax(-1)
    assert diff[1].amax() == 0 and diff[0, :7].amax() == 0 and diff[0, 7] > 0


def test_padded_neighbour_tokens_equal_shorter_neighbours():
    _, model = tiny_retro()
    tokens, nb = inputs(r=6)
    pad = nb.clone()
    pad[..., 4:] = -1
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, pad), model(tokens, nb[..., :4]), rtol=1e-12, atol=1e-12)


def test_all_neighbours_missing_gives_gpt_and_finite_grads():
    gpt, model = tiny_retro()
    model.train()
    tokens, nb = inputs()
    mask = torch.zeros(nb.shape[:3], dtype=torch.bool)
    mask[0, 2] = True  # a single chunk of one row has neighbours
    logits = model(tokens, nb, mask)
    with torch.no_grad():
        ref = gpt(tokens)
    torch.testing.assert_close(logits[1], ref[1], rtol=0, atol=1e-12)
    lm_loss(logits, tokens).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    assert model.encoder.layers[0].attn.qkv.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ left padding
@pytest.mark.parametrize("retro", [False, True])
def test_left_padding_matches_unpadded_rows(retro):
    gpt, model = tiny_retro()
    g = torch.Generator().manual_seed(3)
    lens = [17, 10, 13]
    N = max(lens)
    rows = [torch.randint(0, V, (n,), generator=g) for n in lens]
    nbs = [torch.randint(0, V, (1, n // 4, 2, 6), generator=g) for n in lens]
    tokens = torch.zeros(3, N, dtype=torch.long)
    mask = torch.zeros(3, N, dtype=torch.bool)
    nb = torch.full((3, N // 4, 2, 6), -1)
    for b, (row, n) in enumerate(zip(rows, lens, strict=True)):
        tokens[b, N - n:], mask[b, N - n:] = row, True
        nb[b, : n // 4] = nbs[b][0]
    with torch.no_grad():
        out = model(tokens, nb, attention_mask=mask) if retro else gpt(tokens, mask)
        for b, (row, n) in enumerate(zip(rows, lens, strict=True)):
            ref = model(row[None], nbs[b]) if retro else gpt(row[None])
            torch.testing.assert_close(out[b, N - n:], ref[0], rtol=1e-10, atol=1e-10)


def test_bad_inputs_rejected():
    _, model = tiny_retro()
    tokens, nb = inputs(N=19)
    with pytest.raises(ValueError, match="neighbors"):
        model(tokens, nb[:, :3])  # 4 complete chunks need L >= 4
    with pytest.raises(ValueError, match="tokens"):
        model(tokens + V)
    with pytest.raises(ValueError, match="left padding"):
        m = torch.ones_like(tokens, dtype=torch.bool)
        m[:, 5] = False
        model(tokens, nb, attention_mask=m)
    with pytest.raises(ValueError, match="neighbor_mask"):
        model(tokens, nb, torch.ones(2, 5, 3, dtype=torch.bool))


# ------------------------------------------------------------------ loss
def test_lm_loss_ignore_mask():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    logp = logits.log_softmax(-1)
    terms = [-logp[b, t - 1, tokens[b, t]] for b in range(2) for t in range(1, 5) if mask[b, t]]
    torch.testing.assert_close(lm_loss(logits, tokens, mask), torch.stack(terms).mean())
    torch.testing.assert_close(lm_loss(logits, tokens), torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 7), tokens[:, 1:].reshape(-1)))


# ------------------------------------------------------------------ save / load
@pytest.mark.parametrize("tied", [True, False])
def test_save_load_round_trip(tmp_path, tied):
    gpt, model = tiny_retro(gpt_kw=dict(tie_embeddings=tied))
    model.set_gate(0.7)
    tokens, nb = inputs()
    for net, name in ((gpt, "gpt"), (model, "retro")):
        path = tmp_path / f"{name}.safetensors"
        save(net, path)
        back = load(path).eval()
        assert type(back) is type(net) and back.config == net.config
        with torch.no_grad():
            a = net(tokens, nb) if name == "retro" else net(tokens)
            b = back(tokens, nb) if name == "retro" else back(tokens)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert load(tmp_path / "retro.safetensors").retro == model.retro
    _, gqa = tiny_retro(cca_kv_heads=1)
    save(gqa, tmp_path / "gqa.safetensors")
    back = load(tmp_path / "gqa.safetensors")
    assert back.retro.cca_kv_heads == 1 and back.cca[0].kv.weight.shape == gqa.cca[0].kv.weight.shape
    assert float(load(tmp_path / "retro.safetensors").gate) == pytest.approx(0.7)


def test_load_rejects_mismatch(tmp_path):
    from safetensors.torch import save_file

    from pyretro.model.io import load_state_checked

    gpt = tiny_gpt()
    other = tiny_gpt(d_model=48)
    with pytest.raises(MismatchError, match="shape mismatch"):
        load_state_checked(other, {k: v for k, v in gpt.state_dict().items() if k != "lm_head.weight"}, "x")
    sd = {k: v for k, v in gpt.state_dict().items() if k not in ("lm_head.weight", "norm_f.weight")}
    with pytest.raises(MismatchError, match="missing.*norm_f.weight"):
        load_state_checked(gpt, sd, "x")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(MismatchError, match="pyretro model metadata"):
        load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(MismatchError, match="not a readable"):
        load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.safetensors")


# ------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("case", ["gpt", "retro, masked neighbours", "retro, all neighbours valid + neighbor_mask"])
def test_training_forward_compiles_to_one_graph_and_matches_eager(case):
    """No host syncs in the training forward (id range checks and the all-valid-mask shortcut are eager only):
    one graph, no breaks. A break costs the fusion that brings a compiled narrow-encoder Retro step near its
    FLOP floor (bench/RESULTS.md, Models). Numerics checked with aot_eager (inductor's codegen is not run here)."""
    gpt, model = tiny_retro()
    retro = case != "gpt"
    model = (model if retro else gpt).float().train()  # float32, as training runs (float64 hid a gate graph break)
    tokens, nb = inputs(N=16)
    extra: tuple = ()
    if case == "retro, masked neighbours":
        nb[0, 1, 0, 3:] = -1  # padded neighbour tokens and a missing neighbour: eager builds a mask too
        nb[1, 2, 1] = -1
    elif retro:  # eager drops the all-valid mask, compiled always builds it: the branch that differs
        extra = (torch.ones(nb.shape[:3], dtype=torch.bool),)  # as the training loop calls it
    args = (tokens, nb, *extra) if retro else (tokens,)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(model)(*args)
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), [b.reason for b in ex.break_reasons]
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out_c = compiled(*args)
    grads_c = torch.autograd.grad(lm_loss(out_c, tokens), list(model.parameters()), allow_unused=True)
    out_e = model(*args)
    grads_e = torch.autograd.grad(lm_loss(out_e, tokens), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(out_c, out_e)
    for gc, ge in zip(grads_c, grads_e, strict=True):
        assert (gc is None) == (ge is None)
        if gc is not None:
            torch.testing.assert_close(gc, ge)
    bad = tokens.clone()
    bad[0, 0] = V
    with pytest.raises(ValueError, match="ids must lie in"):  # eager names the problem
        model(bad, *args[1:])
    # compiled, the embedding's own bounds check still refuses out-of-range ids (a less specific error)
    for t_bad in (bad, tokens.clone().index_fill_(1, torch.tensor([3]), -1)):
        with pytest.raises((IndexError, RuntimeError)):
            compiled(t_bad, *args[1:])
    if retro:
        nb_bad = nb.clone()
        nb_bad[1, 0, 0, 0] = V
        with pytest.raises((IndexError, RuntimeError)):
            compiled(tokens, nb_bad, *extra)
