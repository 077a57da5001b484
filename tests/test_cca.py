"""Fused chunked cross-attention vs the float64 reference (CPU; CUDA tests are marked and skip here)."""

from __future__ import annotations

import math

import pytest
import torch

from pyretro.ops import _cca_lib
from pyretro.ops import chunked_cross_attention as cca
from pyretro.ops.reference.cca import chunked_cross_attention_ref as ref
from pyretro.ops.reference.cca import rope_neox

# (B, N, H, D, chunk_len, K, R): N not a multiple of chunk_len, K = 1..4, R not a power of two, H = 1.
SHAPES = [
    (2, 37, 3, 64, 8, 3, 5),
    (1, 200, 1, 80, 16, 2, 100),
    (2, 70, 2, 32, 64, 4, 37),
    (1, 41, 2, 128, 10, 1, 150),
    (3, 9, 1, 6, 4, 2, 3),  # tiny odd head dim
    (1, 230, 2, 16, 100, 2, 90),  # chunk_len > the 64-row query tile, K*R > the 128-key tile
]
# Extra error allowed beyond 2x the same-dtype reference's error (accumulation order differs).
EPS = {torch.float32: 2e-5, torch.float64: 1e-12, torch.bfloat16: 2e-3, torch.float16: 5e-4}


def make(shape, dtype=torch.float64, device="cpu", p_valid=0.7, seed=0, kv_heads=None):
    B, N, H, D, C, K, R = shape
    G = H if kv_heads is None else kv_heads
    L = -(-N // C)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, H, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, L, K, R, G, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, L, K, R, G, D, generator=g, dtype=torch.float64)
    m = torch.rand(B, L, K, R, generator=g) < p_valid
    m[0, min(1, L - 1)] = False  # a fully masked chunk
    if B > 2:
        m[2] = False  # a fully masked batch row
    go = torch.randn(B, N, H, D, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)] + [m.to(device), go.to(device=device, dtype=dtype)]


def naive(q, k, v, m, C, rotary, scale=None, bias=None):
    """Per-token loop straight from the definition: the reference's own check."""
    B, N, H, D = q.shape
    K, R, G = k.shape[2], k.shape[3], k.shape[4]
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = torch.zeros_like(q)
    for b in range(B):
        for t in range(C - 1, N):
            u, pos = divmod(t - (C - 1), C)
            for h in range(H):
                g = h // (H // G)  # grouped-query: query head h reads kv head g
                qq, kk = q[b, t, h], k[b, u, :, :, g].reshape(K * R, D)
                vv, mm = v[b, u, :, :, g].reshape(K * R, D), m[b, u].reshape(-1)
                if rotary:
                    qq = rope_neox(qq[None], torch.tensor([pos]), 1e4)[0]
                    kk = rope_neox(kk, torch.arange(R).repeat(K), 1e4)
                if mm.any():
                    s = (kk @ qq) * scale
                    if bias is not None:  # query index pos in its chunk, key position r of every neighbour
                        s = s + bias[h, pos].repeat(K)
                    s[~mm] = -math.inf
                    out[b, t, h] = torch.softmax(s, 0) @ vv
    return out


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("kv_heads", [None, 1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_reference_matches_definition(rotary, kv_heads, bias):
    shape = (2, 11, 4, 8, 4, 2, 3)
    q, k, v, m, _ = make(shape, kv_heads=kv_heads)
    b = make_bias(shape) if bias else None
    torch.testing.assert_close(ref(q, k, v, m, 4, rotary=rotary, scale=0.3, bias=b),
                               naive(q, k, v, m, 4, rotary, 0.3, bias=b))


def _fwd_bwd(fn, q, k, v, m, go, C, bias=None, **kw):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    if bias is not None:
        bias = bias.detach().requires_grad_()
        kw["bias"] = bias
    out = fn(q, k, v, m, C, **kw)
    out.backward(go)
    return [out.detach(), q.grad, k.grad, v.grad] + ([] if bias is None else [bias.grad])


def make_bias(shape, seed=0):
    """A random position bias [H, chunk_len, R] (float64), a few units wide like a trained one."""
    _, _, H, _, C, _, R = shape
    return 2 * torch.randn(H, C, R, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64)


def _check_vs_gold(shape, dtype, device="cpu", rotary=False, scale=None, seed=0, kv_heads=None, bias=False):
    q, k, v, m, go = make(shape, seed=seed, kv_heads=kv_heads)
    assert _cca_lib.fused_available(q.to(device)), "fused kernels not built: the reference would be tested"
    C = shape[4]
    kw = dict(rotary=rotary, scale=scale)
    b64 = make_bias(shape, seed) if bias else None
    gold = _fwd_bwd(ref, q, k, v, m, go, C, bias=b64, **kw)
    low = [t.to(device=device, dtype=dtype) for t in (q, k, v)]
    m_dev, go_dev = m.to(device), go.to(device=device, dtype=dtype)
    # the op takes the bias in any float dtype (it computes in float32); the same-dtype reference in q's
    b_low = None if b64 is None else b64.to(device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    fused = _fwd_bwd(cca, *low, m_dev, go_dev, C, bias=b_low, **kw)
    same = _fwd_bwd(ref, *low, m_dev, go_dev, C, bias=None if b64 is None else b64.to(device=device, dtype=dtype), **kw)
    names = ("out", "dq", "dk", "dv", "dbias")[: len(gold)]
    for name, f, s, g in zip(names, fused, same, gold, strict=True):
        assert f.dtype == (b_low.dtype if name == "dbias" else dtype) and f.shape == g.shape, name
        assert torch.isfinite(f).all(), name
        err = (f.double().cpu() - g).abs().max().item()
        base = (s.double().cpu() - g).abs().max().item()
        assert err <= 2 * base + EPS[dtype], f"{name}: error {err:.3g} vs same-dtype reference {base:.3g}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_cpu_matches_reference(shape, dtype):
    _check_vs_gold(shape, dtype, rotary=shape[3] % 2 == 0 and shape[0] == 2, seed=1)


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_cpu_every_isa(monkeypatch, isa, rotary):
    monkeypatch.setenv("PYRETRO_CCA_CPU_ISA", isa)
    _check_vs_gold((2, 37, 3, 64, 8, 3, 5), torch.float32, rotary=rotary, scale=0.21)
    _check_vs_gold((1, 20, 2, 40, 5, 2, 70), torch.float64, rotary=rotary)


# Grouped-query CCA: (shape, kv heads). H=6 with 3/2/1 kv heads; H=4 with 2 at a tile-crossing shape.
GQA_CASES = [((2, 37, 6, 32, 8, 3, 5), 3), ((2, 37, 6, 32, 8, 3, 5), 1), ((1, 230, 4, 16, 100, 2, 90), 2),
             ((3, 21, 6, 8, 4, 2, 7), 2)]


@pytest.mark.parametrize("case", GQA_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_cpu_grouped_query_matches_reference(case, dtype):
    shape, G = case
    _check_vs_gold(shape, dtype, rotary=dtype != torch.bfloat16, seed=2, kv_heads=G)


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_cpu_grouped_query_every_isa(monkeypatch, isa):
    monkeypatch.setenv("PYRETRO_CCA_CPU_ISA", isa)
    _check_vs_gold((2, 37, 4, 64, 8, 3, 5), torch.float32, rotary=True, kv_heads=2)


# Position bias (RetroConfig.cca_position_bias): every dtype, grouped-query heads, tile-crossing shapes.
BIAS_SHAPES = [(2, 37, 3, 64, 8, 3, 5), (1, 230, 2, 16, 100, 2, 90), (3, 9, 1, 6, 4, 2, 3)]


@pytest.mark.parametrize("shape", BIAS_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_cpu_position_bias_matches_reference(shape, dtype):
    _check_vs_gold(shape, dtype, rotary=shape[3] % 2 == 0, seed=3, bias=True)


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_cpu_position_bias_every_isa(monkeypatch, isa):
    monkeypatch.setenv("PYRETRO_CCA_CPU_ISA", isa)
    _check_vs_gold((2, 37, 4, 32, 8, 3, 5), torch.float32, rotary=True, kv_heads=2, bias=True)
    _check_vs_gold((1, 20, 2, 40, 5, 2, 70), torch.float64, bias=True)


def test_position_bias_semantics():
    """A per-row constant bias changes nothing (softmax shift); a huge bias on one position selects it."""
    q, k, v, m, _ = make((2, 19, 2, 8, 4, 1, 3), dtype=torch.float32)
    m[:] = True
    base = cca(q, k, v, m, 4)
    row_const = torch.randn(2, 4, 1).expand(2, 4, 3)
    torch.testing.assert_close(cca(q, k, v, m, 4, bias=row_const), base)
    pick = torch.zeros(2, 4, 3)
    pick[:, :, 1] = 60.0  # position 1 of the (single) neighbour: the output is its value there
    out = cca(q, k, v, m, 4, bias=pick)
    want = v[:, :, 0, 1]  # [B, L, H, D]
    t = torch.arange(3, 19)
    torch.testing.assert_close(out[:, t], want[:, (t - 3) // 4], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, base, atol=1e-2)


def test_position_bias_gradcheck_float64():
    q, k, v, m, _ = make((2, 13, 2, 6, 4, 2, 3))
    b = make_bias((2, 13, 2, 6, 4, 2, 3)).requires_grad_()
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, bb, c, d: cca(a, bb, c, m, 4, rotary=True, bias=d), (q, k, v, b))


def test_grouped_query_equals_expanded_heads():
    """GQA == full heads with each kv head repeated over its group; dk/dv are the group sums."""
    q, k, v, m, go = make((2, 30, 6, 16, 8, 2, 5), dtype=torch.float32, kv_heads=2)
    out, dq, dk, dv = _fwd_bwd(cca, q, k, v, m, go, 8)
    ke, ve = (t.repeat_interleave(3, dim=4) for t in (k, v))
    oute, dqe, dke, dve = _fwd_bwd(cca, q, ke, ve, m, go, 8)
    torch.testing.assert_close(out, oute)
    torch.testing.assert_close(dq, dqe)
    torch.testing.assert_close(dk, dke.unflatten(4, (2, 3)).sum(5))
    torch.testing.assert_close(dv, dve.unflatten(4, (2, 3)).sum(5))


def test_zero_rows_and_grads_exact():
    shape = (3, 30, 2, 16, 8, 2, 5)
    q, k, v, m, go = make(shape, dtype=torch.float32)
    C = 8
    m[1, 0] = False
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = cca(q, k, v, m, C)
    out.backward(go)
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    assert (out[:, : C - 1] == 0).all() and (q.grad[:, : C - 1] == 0).all()
    assert (out[2] == 0).all() and (q.grad[2] == 0).all() and (k.grad[2] == 0).all()  # fully masked batch row
    assert (out[1, C - 1 : 2 * C - 1] == 0).all()  # chunk 0 of batch 1 has no valid key
    assert (k.grad[~m] == 0).all() and (v.grad[~m] == 0).all()  # masked keys
    assert (k.grad[:, -1] == 0).all()  # last chunk: no query attends it (30 < 4 * 8)
    assert out[0, C - 1 :].abs().sum() > 0


def test_short_sequences():
    for N in (1, 7, 8):
        q, k, v, m, go = make((2, N, 2, 16, 8, 2, 3), dtype=torch.float32)
        m[:] = True
        torch.testing.assert_close(cca(q, k, v, m, 8), ref(q, k, v, m, 8))


@pytest.mark.parametrize("B, N, K, R", [(0, 10, 2, 3), (2, 0, 2, 3), (2, 10, 0, 3), (2, 10, 2, 0)])
def test_empty_dims(B, N, K, R):
    L = -(-N // 4)
    q = torch.randn(B, N, 2, 8, requires_grad=True)
    k = torch.randn(B, L, K, R, 2, 8, requires_grad=True)
    v = torch.randn(B, L, K, R, 2, 8, requires_grad=True)
    out = cca(q, k, v, torch.ones(B, L, K, R, dtype=torch.bool), 4)
    out.sum().backward()
    assert out.shape == q.shape and (out == 0).all()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and (q.grad == 0).all()


def test_gradcheck_float64():
    q, k, v, m, _ = make((2, 13, 2, 6, 4, 2, 3))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: cca(a, b, c, m, 4, rotary=True, scale=0.7), (q, k, v))


def test_opcheck():
    q, k, v, m, _ = make((2, 13, 2, 8, 4, 2, 3), dtype=torch.float32)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.library.opcheck(torch.ops.pyretro.cca_fwd.default, (q, k, v, m, 4, 0.35, True, 10000.0))
    out, lse = torch.ops.pyretro.cca_fwd(q, k, v, m, 4, 0.35, True, 10000.0)
    go = torch.randn_like(out)
    args = (go, q.detach(), k.detach(), v.detach(), m, out.detach(), lse, 4, 0.35, True, 10000.0)
    torch.library.opcheck(torch.ops.pyretro.cca_bwd.default, args)
    bias = torch.randn(2, 4, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.pyretro.cca_fwd.default, (q, k, v, m, 4, 0.35, True, 10000.0, bias))
    out, lse = torch.ops.pyretro.cca_fwd(q, k, v, m, 4, 0.35, True, 10000.0, bias)
    torch.library.opcheck(torch.ops.pyretro.cca_bwd.default, (*args[:5], out.detach(), lse, *args[7:], bias.detach()))


class _Block(torch.nn.Module):
    def __init__(self, d: int, h: int, chunk_len: int):
        super().__init__()
        self.h, self.c = h, chunk_len
        self.wq = torch.nn.Linear(d, d)
        self.wo = torch.nn.Linear(d, d)

    def forward(self, x, k, v, m):
        B, N, _ = x.shape
        q = self.wq(x).view(B, N, self.h, -1)
        return self.wo(cca(q, k, v, m, self.c, rotary=True).reshape(B, N, -1))


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile(backend):
    torch.manual_seed(0)
    q, k, v, m, _ = make((2, 19, 2, 8, 4, 2, 3), dtype=torch.float32)
    x = torch.randn(2, 19, 16)
    mod = _Block(16, 2, 4)
    eager = mod(x, k, v, m)
    eager.sum().backward()
    g_eager = mod.wq.weight.grad.clone()
    mod.zero_grad()
    compiled = torch.compile(mod, backend=backend, fullgraph=True)
    out = compiled(x, k, v, m)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(mod.wq.weight.grad, g_eager)


def test_torch_compile_position_bias():
    """The bias is a graph input with a gradient through the compiled op (aot_eager)."""
    q, k, v, m, _ = make((2, 19, 2, 8, 4, 2, 3), dtype=torch.float32)
    bias = torch.randn(2, 4, 3, requires_grad=True)
    f = torch.compile(lambda a, b: cca(a, k, v, m, 4, rotary=True, bias=b), backend="aot_eager", fullgraph=True)
    q.requires_grad_()
    out = f(q, bias)
    (gq, gb) = torch.autograd.grad(out.square().sum(), (q, bias))
    want = ref(q, k, v, m, 4, rotary=True, bias=bias)
    (wq, wb) = torch.autograd.grad(want.square().sum(), (q, bias))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(gb, wb)
    torch.testing.assert_close(gq, wq)


def test_autocast_cpu_casts_to_bf16():
    q, k, v, m, _ = make((1, 12, 2, 8, 4, 1, 3), dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cca(q, k.bfloat16(), v, m, 4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref(q, k, v, m, 4), atol=3e-2, rtol=3e-2)


def test_non_contiguous_inputs():
    q, k, v, m, _ = make((2, 20, 2, 8, 4, 2, 3), dtype=torch.float32)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)
    kt = k.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(cca(qt, kt, v, m, 4), ref(q, k, v, m, 4))


def _bad(**over):
    q, k, v, m, _ = make((2, 10, 2, 8, 4, 2, 3), dtype=torch.float32)
    args = dict(q=q, k=k, v=v, key_mask=m, chunk_len=4)
    args.update(over)
    return args


@pytest.mark.parametrize(
    "over, exc, match",
    [
        (dict(q=torch.zeros(2, 10, 16)), ValueError, "q must be"),
        (dict(k=torch.zeros(2, 3, 2, 3, 2)), ValueError, "k must be"),
        (dict(v=torch.zeros(2, 3, 2, 4, 2, 8)), ValueError, "v shape"),
        (dict(k=torch.zeros(2, 4, 2, 3, 2, 8), v=torch.zeros(2, 4, 2, 3, 2, 8)), ValueError, "ceil"),
        (dict(key_mask=torch.ones(2, 3, 2, 3)), TypeError, "torch.bool"),
        (dict(key_mask=torch.ones(2, 3, 2, 4, dtype=torch.bool)), ValueError, "key_mask shape"),
        (dict(q=torch.zeros(2, 10, 2, 8, dtype=torch.float64)), TypeError, "share a dtype"),
        (dict(q=torch.zeros(2, 10, 2, 8, dtype=torch.int32)), TypeError, "not supported"),
        (dict(chunk_len=0), ValueError, "chunk_len must be > 0"),
        (dict(chunk_len=4.0), TypeError, "chunk_len must be an int"),
        (dict(q=torch.zeros(2, 10, 2, 130), k=torch.zeros(2, 3, 2, 3, 2, 130), v=torch.zeros(2, 3, 2, 3, 2, 130)),
         ValueError, "D=130"),
        (dict(q=torch.zeros(2, 10, 2, 8, device="meta")), ValueError, "one device"),
        (dict(q=torch.zeros(2, 10, 3, 8)), ValueError, "dividing H=3"),
        (dict(k=torch.zeros(2, 3, 2, 3, 4, 8), v=torch.zeros(2, 3, 2, 3, 4, 8)), ValueError, "dividing H=2"),
    ],
)
def test_bad_input(over, exc, match):
    with pytest.raises(exc, match=match):
        cca(**_bad(**over))


@pytest.mark.parametrize(
    "bias, exc, match",
    [
        (torch.zeros(2, 4, 4), ValueError, "bias shape"),
        (torch.zeros(2, 3, 3), ValueError, "bias shape"),
        (torch.zeros(2, 4, 3, dtype=torch.int64), TypeError, "bias dtype"),
        (torch.zeros(2, 4, 3, device="meta"), ValueError, "bias is on"),
        ([[0.0]], TypeError, "bias must be"),
    ],
)
def test_bad_bias(bias, exc, match):
    with pytest.raises(exc, match=match):
        cca(**_bad(), bias=bias)


def test_bad_scalar_args():
    with pytest.raises(ValueError, match="scale"):
        cca(**_bad(), scale=float("nan"))
    with pytest.raises(ValueError, match="rope_theta"):
        cca(**_bad(), rope_theta=-1.0)
    q, k, v, m, _ = make((2, 10, 2, 7, 4, 2, 3), dtype=torch.float32)
    with pytest.raises(ValueError, match="even head dim"):
        cca(q, k, v, m, 4, rotary=True)


def test_bad_cuda_variant_env(monkeypatch):
    monkeypatch.setenv("PYRETRO_CCA_CUDA_VARIANT", "fastest")
    with pytest.raises(ValueError, match="PYRETRO_CCA_CUDA_VARIANT"):
        cca(**_bad())


def test_core_rejects_bad_views():
    """The C++ checks back the Python ones (e.g. someone calling the op directly)."""
    q, k, v, m, _ = make((2, 10, 2, 8, 4, 2, 3), dtype=torch.float32)
    with pytest.raises(ValueError, match="dimension 3"):
        torch.ops.pyretro.cca_fwd(q, k[:, :, :, :2], v, m, 4, 0.3, False, 1e4)
    with pytest.raises(ValueError, match="chunk_len"):
        torch.ops.pyretro.cca_fwd(q, k, v, m, -1, 0.3, False, 1e4)
    q3 = torch.zeros(2, 10, 3, 8)
    with pytest.raises(ValueError, match="key/value heads do not divide"):
        torch.ops.pyretro.cca_fwd(q3, k, v, m, 4, 0.3, False, 1e4)
    with pytest.raises(ValueError, match="bias: .*dimension 2"):
        torch.ops.pyretro.cca_fwd(q, k, v, m, 4, 0.3, False, 1e4, torch.zeros(2, 4, 5))
    with pytest.raises(TypeError, match="bias"):
        torch.ops.pyretro.cca_fwd(q, k, v, m, 4, 0.3, False, 1e4, torch.zeros(2, 4, 3, dtype=torch.float64))


# ---- CUDA (skipped without a GPU and a CUDA build) -------------------------------------------------------
CUDA_SHAPES = [
    (2, 130, 2, 64, 64, 2, 128),
    (1, 77, 1, 128, 16, 3, 45),
    (2, 50, 3, 32, 8, 4, 13),
    (1, 100, 2, 80, 32, 1, 200),
    (1, 64, 2, 96, 64, 2, 33),
    (1, 230, 2, 64, 100, 2, 20),  # chunk_len > 64: several query-row blocks per chunk
]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rotary", [False, True])
def test_cuda_matches_reference(shape, dtype, rotary):
    assert _cca_lib.fused_available(torch.empty(1, 1, 1, shape[3], device="cuda"))
    _check_vs_gold(shape, dtype, device="cuda", rotary=rotary, scale=None if rotary else 0.11)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_tc_variant_matches_reference(monkeypatch, shape, dtype):
    """The experimental tensor-core forward (PYRETRO_CCA_CUDA_VARIANT=tc) must meet the same bar."""
    monkeypatch.setenv("PYRETRO_CCA_CUDA_VARIANT", "tc")
    _check_vs_gold(shape, dtype, device="cuda", rotary=shape[3] != 80)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_grouped_query_matches_reference(dtype):
    _check_vs_gold((2, 130, 4, 64, 64, 2, 128), dtype, device="cuda", rotary=True, kv_heads=2)
    _check_vs_gold((1, 77, 3, 32, 16, 3, 45), dtype, device="cuda", kv_heads=1)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_position_bias_matches_reference(dtype):
    _check_vs_gold((2, 130, 2, 64, 64, 2, 128), dtype, device="cuda", rotary=True, bias=True)
    _check_vs_gold((1, 230, 2, 64, 100, 2, 20), dtype, device="cuda", bias=True)  # several row blocks
    _check_vs_gold((2, 50, 4, 32, 8, 4, 13), dtype, device="cuda", kv_heads=2, bias=True)


@pytest.mark.cuda
def test_cuda_position_bias_tc_variant_falls_back(monkeypatch):
    """The tc forward has no bias: with one, the portable kernel must run (same results)."""
    monkeypatch.setenv("PYRETRO_CCA_CUDA_VARIANT", "tc")
    _check_vs_gold((2, 130, 2, 64, 64, 2, 128), torch.bfloat16, device="cuda", rotary=True, bias=True)


@pytest.mark.cuda
def test_cuda_zero_rows_and_stream():
    shape = (3, 30, 2, 64, 8, 2, 5)
    q, k, v, m, go = make(shape, dtype=torch.bfloat16, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out = cca(q, k, v, m, 8)
        out.backward(go)
    s.synchronize()
    assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
    assert (out[:, :7] == 0).all() and (out[2] == 0).all() and (q.grad[2] == 0).all()
    assert (k.grad[~m] == 0).all() and (v.grad[~m] == 0).all()


@pytest.mark.cuda
def test_cuda_bench_shape_bf16():
    _check_vs_gold((1, 256, 2, 64, 64, 2, 128), torch.bfloat16, device="cuda", rotary=True)
    _check_vs_gold((1, 256, 2, 128, 64, 2, 128), torch.bfloat16, device="cuda")


@pytest.mark.cuda
def test_cuda_compile():
    q, k, v, m, _ = make((2, 19, 2, 64, 4, 2, 3), dtype=torch.bfloat16, device="cuda")
    f = torch.compile(lambda a, b, c: cca(a, b, c, m, 4), fullgraph=True)
    torch.testing.assert_close(f(q, k, v), cca(q, k, v, m, 4))
