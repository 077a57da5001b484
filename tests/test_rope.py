"""pyretro.ops.rope: kernels vs the float64 reference, autograd, in-place/fused variants, torch.library checks."""

from __future__ import annotations

import pytest
import torch

from pyretro.ops.reference.rope import rope_reference
from pyretro.ops.rope import rope, rope_, rope_qk, rope_qk_

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def eager_rope(x, positions, theta=10000.0, rotary_dim=None, interleaved=False):
    """How eager PyTorch code usually does it: fp32 angle table, math in x's dtype (the error yardstick)."""
    d = x.shape[-1]
    r = d if rotary_dim is None else rotary_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.float32) / r))
    freqs = positions.to(torch.float32)[..., None] * inv_freq
    cos, sin = freqs.cos().to(x.dtype)[..., None, :], freqs.sin().to(x.dtype)[..., None, :]
    xr, rest = x[..., :r], x[..., r:]
    a, b = (xr[..., 0::2], xr[..., 1::2]) if interleaved else (xr[..., : r // 2], xr[..., r // 2 :])
    oa, ob = a * cos - b * sin, b * cos + a * sin
    out = torch.stack((oa, ob), -1).flatten(-2) if interleaved else torch.cat((oa, ob), -1)
    return torch.cat((out, rest), -1)


def rand_x(gen, shape, dtype):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def max_err(a, b):
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("d,r", [(32, 32), (64, 32), (80, 80), (80, 16), (128, 64), (128, 128)])
@pytest.mark.parametrize("batch_pos", [False, True])
def test_forward_matches_reference(gen, dtype, interleaved, d, r, batch_pos):
    b, s, h = 2, 13, 3 if d != 80 else 1
    x = rand_x(gen, (b, s, h, d), dtype)
    pos = torch.randint(0, 4096, (b, s) if batch_pos else (s,), generator=gen)
    out = rope(x, pos, rotary_dim=r, interleaved=interleaved)
    assert out.dtype == dtype and out.shape == x.shape
    gold = rope_reference(x.double(), pos, rotary_dim=r, interleaved=interleaved)
    eager_err = max_err(eager_rope(x, pos, rotary_dim=r, interleaved=interleaved), gold)
    err = max_err(out, gold)
    assert err <= 2 * eager_err + 1e-12, (err, eager_err)
    # pass-through dims are bit-exact copies
    assert torch.equal(out[..., r:], x[..., r:])
    # and the kernel agrees with the same-dtype reference to within one rounding of the output
    same = rope_reference(x, pos, rotary_dim=r, interleaved=interleaved)
    tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(dtype, 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10)
    assert max_err(out, same) <= tol * 8


def test_large_positions_keep_fp32_accuracy(gen):
    # fp32 outer(pos, inv_freq) loses ~1e-2 rad at p ~ 1e5; the kernel reduces the angle in float64.
    x = rand_x(gen, (1, 64, 2, 128), torch.float32)
    pos = torch.arange(100_000, 100_064)
    gold = rope_reference(x.double(), pos, rotary_dim=64)
    assert max_err(rope(x, pos, rotary_dim=64), gold) < 2e-6
    assert max_err(eager_rope(x, pos, rotary_dim=64), gold) > 1e-4  # the yardstick really is worse here
    pos = torch.tensor([2**40, -(2**33), 7, -1] * 16)
    assert max_err(rope(x, pos), rope_reference(x.double(), pos)) < 2e-6


@pytest.mark.parametrize("shape", [(5, 1, 32), (2, 3, 5, 4, 16), (1, 0, 2, 8)])
def test_leading_dims(gen, shape):
    x = rand_x(gen, shape, torch.float32)
    s = shape[-3]
    for pos in (torch.arange(s) + 3, torch.randint(-50, 50, shape[:-2], generator=gen)):
        assert max_err(rope(x, pos), rope_reference(x.double(), pos)) < 1e-5


def test_qk_with_empty_k(gen):
    q = rand_x(gen, (2, 5, 3, 16), torch.float32)
    k = torch.empty(2, 5, 0, 16)
    pos = torch.arange(5)
    oq, ok = rope_qk(q, k, pos)
    assert torch.equal(oq, rope(q, pos)) and ok.shape == k.shape


def test_int32_and_small_int_positions(gen):
    x = rand_x(gen, (2, 9, 2, 16), torch.float32)
    p64 = torch.randint(0, 120, (9,), generator=gen)
    ref = rope(x, p64)
    for dt in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(rope(x, p64.to(dt)), ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_backward_matches_reference(gen, dtype, interleaved):
    x = rand_x(gen, (2, 11, 3, 64), dtype).requires_grad_()
    pos = torch.randint(0, 3000, (2, 11), generator=gen)
    g = rand_x(gen, (2, 11, 3, 64), dtype)
    rope(x, pos, rotary_dim=32, interleaved=interleaved).backward(g)
    xd = x.detach().double().requires_grad_()
    rope_reference(xd, pos, rotary_dim=32, interleaved=interleaved).backward(g.double())
    eager_x = x.detach().clone().requires_grad_()
    eager_rope(eager_x, pos, rotary_dim=32, interleaved=interleaved).backward(g)
    assert x.grad.dtype == dtype
    assert max_err(x.grad, xd.grad) <= 2 * max_err(eager_x.grad, xd.grad) + 1e-12


def test_gradcheck_float64(gen):
    x = rand_x(gen, (2, 5, 2, 12), torch.float64).requires_grad_()
    pos = torch.randint(0, 500, (2, 5), generator=gen)
    assert torch.autograd.gradcheck(lambda t: rope(t, pos, rotary_dim=8), (x,))
    assert torch.autograd.gradgradcheck(lambda t: rope(t, pos, rotary_dim=8, interleaved=True), (x,))
    k = rand_x(gen, (2, 5, 1, 12), torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: rope_qk(a, b, pos[0], rotary_dim=12), (x, k))


def test_inverse_rotation_roundtrip(gen):
    x = rand_x(gen, (3, 17, 2, 48), torch.float64)
    pos = torch.randint(-10_000, 10_000, (3, 17), generator=gen)
    y = rope(x, pos, rotary_dim=24, interleaved=True)
    assert not torch.allclose(y, x)
    assert torch.allclose(rope(y, -pos, rotary_dim=24, interleaved=True), x, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_equals_out_of_place(gen, dtype):
    x = rand_x(gen, (2, 9, 4, 32), dtype)
    pos = torch.randint(0, 999, (9,), generator=gen)
    expect = rope(x, pos, rotary_dim=16, interleaved=True)
    y = x.clone()
    assert rope_(y, pos, rotary_dim=16, interleaved=True) is y
    assert torch.equal(y, expect)


def test_rope_qk_gqa_and_strided(gen):
    b, s, hq, hk, d = 2, 10, 4, 2, 32
    qkv = rand_x(gen, (b, s, hq + 2 * hk, d), torch.float32)
    q, k = qkv[:, :, :hq], qkv[:, :, hq : hq + hk]  # strided views of a fused projection
    pos = torch.randint(0, 2048, (b, s), generator=gen)
    oq, ok = rope_qk(q, k, pos, rotary_dim=16)
    assert torch.equal(oq, rope(q.contiguous(), pos, rotary_dim=16))
    assert torch.equal(ok, rope(k.contiguous(), pos, rotary_dim=16))
    before = qkv.clone()
    rope_qk_(q, k, pos, rotary_dim=16)
    assert torch.equal(qkv[:, :, :hq], oq) and torch.equal(qkv[:, :, hq : hq + hk], ok)
    assert torch.equal(qkv[:, :, hq + hk :], before[:, :, hq + hk :])  # v untouched


def test_noncontiguous_last_dim(gen):
    x = rand_x(gen, (2, 6, 3, 16), torch.float32).transpose(-1, -2).contiguous().transpose(-1, -2)
    assert x.stride(-1) != 1
    pos = torch.arange(6)
    assert torch.equal(rope(x, pos), rope(x.contiguous(), pos))
    y = x.clone(memory_format=torch.preserve_format)
    rope_(y, pos)
    assert torch.equal(y, rope(x.contiguous(), pos))


def test_inplace_with_autograd_falls_back(gen):
    w = rand_x(gen, (1, 5, 2, 8), torch.float32).requires_grad_()
    pos = torch.arange(5)
    y = w * 2
    rope_(y, pos)
    y.sum().backward()
    w2 = w.detach().clone().requires_grad_()
    rope(w2 * 2, pos).sum().backward()
    assert torch.allclose(w.grad, w2.grad)


def test_reference_fallback_matches_kernel(gen, monkeypatch):
    # The path used by a core without the kernel (or a CPU-only build given CUDA tensors).
    import importlib

    rope_mod = importlib.import_module("pyretro.ops.rope")  # (pyretro.ops.rope the attribute is the function)
    x = rand_x(gen, (2, 9, 3, 32), torch.float32)
    k = rand_x(gen, (2, 9, 1, 32), torch.float32)
    pos = torch.randint(0, 5000, (2, 9), generator=gen)
    expect = rope(x, pos, rotary_dim=16, interleaved=True), rope_qk(x, k, pos)
    monkeypatch.setattr(rope_mod, "_kernel", lambda t: None)
    assert max_err(rope(x, pos, rotary_dim=16, interleaved=True), expect[0]) < 1e-6
    y = x.clone()
    rope_(y, pos, rotary_dim=16, interleaved=True)
    assert max_err(y, expect[0]) < 1e-6
    for a, b in zip(rope_qk(x, k, pos), expect[1], strict=True):
        assert max_err(a, b) < 1e-6


def test_opcheck(gen):
    x = rand_x(gen, (2, 5, 3, 16), torch.float32).requires_grad_()
    k = rand_x(gen, (2, 5, 1, 16), torch.float32).requires_grad_()
    pos = torch.randint(0, 100, (2, 5), generator=gen)
    args = (10000.0, 8, False, False)
    torch.library.opcheck(torch.ops.pyretro.rope.default, (x, pos, *args))
    torch.library.opcheck(torch.ops.pyretro.rope_qk.default, (x, k, pos, *args))
    torch.library.opcheck(torch.ops.pyretro.rope_.default, (x.detach().clone(), pos, *args))
    torch.library.opcheck(torch.ops.pyretro.rope_qk_.default, (x.detach().clone(), k.detach().clone(), pos, *args))


def test_torch_compile(gen):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 3 * 2 * 16)

        def forward(self, h, pos):
            q, k, v = self.proj(h).unflatten(-1, (3, 2, 16)).unbind(-3)
            q, k = rope_qk(q, k, pos, rotary_dim=8)
            return (q * k).sum(-1) + rope(v, pos).sum(-1)

    torch._dynamo.reset()
    m = Block()
    h = rand_x(gen, (2, 7, 16), torch.float32)
    pos = torch.arange(7)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    out = compiled(h, pos)
    assert torch.allclose(out, m(h, pos), atol=1e-6)
    out.sum().backward()


@pytest.mark.slow
def test_torch_compile_inductor(gen):
    # Inductor (generates and compiles C++ around the opaque ops): ~10-30 s on a busy 2-core machine.
    def f(q, k, pos):
        q, k = rope_qk(q * 2, k, pos, rotary_dim=8)
        return (q * k).sum(-1) + rope(q, pos, interleaved=True).sum(-1)

    torch._dynamo.reset()
    q = rand_x(gen, (2, 7, 2, 16), torch.float32).requires_grad_()
    k = rand_x(gen, (2, 7, 1, 16), torch.float32).requires_grad_()
    pos = torch.arange(7)
    out = torch.compile(f, fullgraph=True)(q, k, pos)
    assert torch.allclose(out, f(q, k, pos), atol=1e-5)
    out.sum().backward()
    q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    f(q2, k2, pos).sum().backward()
    assert torch.allclose(q.grad, q2.grad, atol=1e-5) and torch.allclose(k.grad, k2.grad, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(rotary_dim=7), ValueError, "rotary_dim: must be even"),
        (dict(rotary_dim=18), ValueError, "rotary_dim: must be in"),
        (dict(rotary_dim=0), ValueError, "rotary_dim"),
        (dict(rotary_dim=8.0), TypeError, "rotary_dim"),
        (dict(theta=-1.0), ValueError, "theta"),
        (dict(theta=float("nan")), ValueError, "theta"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rope(torch.randn(1, 4, 2, 16), torch.arange(4), **kwargs)


def test_bad_tensors():
    x = torch.randn(2, 4, 2, 16)
    with pytest.raises(ValueError, match="positions: shape"):
        rope(x, torch.arange(5))
    with pytest.raises(ValueError, match="positions: shape"):
        rope(x, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="positions: dtype"):
        rope(x, torch.arange(4.0))
    with pytest.raises(TypeError, match="positions: dtype"):
        rope(x, torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="x: dtype"):
        rope(x.to(torch.int32), torch.arange(4))
    with pytest.raises(ValueError, match="x: expected shape"):
        rope(torch.randn(4, 16), torch.arange(4))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        rope(x.numpy(), torch.arange(4))
    with pytest.raises(ValueError, match="positions: on meta"):
        rope(x, torch.arange(4, device="meta"))
    with pytest.raises(TypeError, match="k: dtype"):
        rope_qk(x, x.double(), torch.arange(4))
    with pytest.raises(ValueError, match="k: shape"):
        rope_qk(x, torch.randn(2, 4, 2, 8), torch.arange(4))


def test_core_guards():
    # Direct _C calls are validated too (no out-of-bounds reads from a malformed call).
    from pyretro._ext import _C
    from pyretro._tensor import view

    x = torch.randn(1, 4, 2, 16)
    out = torch.empty(1, 4, 2, 16)
    with pytest.raises(ValueError, match="positions"):
        _C.rope([view(x)], [view(out)], view(torch.arange(3)[None]), 1e4, 16, False, False, 0)
    with pytest.raises(ValueError, match="rotary_dim"):
        _C.rope([view(x)], [view(out)], view(torch.arange(4)[None]), 1e4, 15, False, False, 0)
    with pytest.raises(ValueError, match="out"):
        _C.rope([view(x)], [view(out[:, :2])], view(torch.arange(4)[None]), 1e4, 16, False, False, 0)


# --- CUDA (skipped without a GPU and a CUDA build) ---------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("d,r", [(64, 64), (64, 32), (80, 16), (128, 64), (32, 32)])
def test_cuda_matches_cpu(gen, dtype, interleaved, d, r):
    x = rand_x(gen, (3, 37, 5, d), dtype)
    for pos in (torch.randint(0, 200_000, (37,), generator=gen), torch.randint(-9, 9000, (3, 37), generator=gen)):
        gold = rope_reference(x.double(), pos, rotary_dim=r, interleaved=interleaved)
        out = rope(x.cuda(), pos.cuda(), rotary_dim=r, interleaved=interleaved).cpu()
        err = max_err(out, gold)
        assert err <= 2 * max_err(rope(x, pos, rotary_dim=r, interleaved=interleaved), gold) + 1e-6
        assert torch.equal(out[..., r:], x[..., r:])
        y = x.cuda()
        rope_(y, pos.cuda(), rotary_dim=r, interleaved=interleaved)
        assert torch.equal(y.cpu(), out)


@pytest.mark.cuda
def test_cuda_qk_backward_strided_and_stream(gen):
    qkv = rand_x(gen, (2, 33, 10, 64), torch.bfloat16).cuda()
    q, k = qkv[:, :, :6].requires_grad_(False), qkv[:, :, 6:8]
    pos = torch.randint(0, 4096, (2, 33), generator=gen).cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())  # inputs were made on the default stream
    with torch.cuda.stream(s):
        oq, ok = rope_qk(q, k, pos, rotary_dim=32)
    s.synchronize()
    assert torch.equal(oq.cpu(), rope(q.cpu(), pos.cpu(), rotary_dim=32))
    assert torch.equal(ok.cpu(), rope(k.cpu(), pos.cpu(), rotary_dim=32))
    xg = q.float().detach().requires_grad_()
    g = torch.randn_like(xg)
    rope(xg, pos, rotary_dim=32).backward(g)
    xc = xg.detach().cpu().requires_grad_()
    rope(xc, pos.cpu(), rotary_dim=32).backward(g.cpu())
    assert max_err(xg.grad.cpu(), xc.grad) < 1e-5


@pytest.mark.cuda
def test_cuda_device_mismatch():
    with pytest.raises(ValueError, match="positions: on cpu"):
        rope(torch.randn(1, 4, 2, 16, device="cuda"), torch.arange(4))
