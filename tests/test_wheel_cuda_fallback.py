"""A CPU-only build given CUDA tensors: reference fallback with a one-time warning naming the fix, or an error
with ``PYRETRO_CUDA_FALLBACK=error`` (pyretro/ops/_device.py). There is no GPU here, so CUDA tensors are faked
with a tensor subclass whose ``device`` / ``is_cuda`` say CUDA while the data stays on the CPU."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from pyretro.ops import _cca_lib, _device
from pyretro.ops.reference.cca import chunked_cross_attention_ref

# pyretro.ops re-exports functions named like their modules (``rope``): import the modules themselves
rope_mod = importlib.import_module("pyretro.ops.rope")
gather_mod = importlib.import_module("pyretro.ops.gather")


class FakeCuda(torch.Tensor):
    """CPU data that reports itself as a CUDA tensor to the ops' device checks."""

    @property
    def device(self):  # type: ignore[override]
        return torch.device("cuda", 0)

    @property
    def is_cuda(self):  # type: ignore[override]
        return True


def fake_cuda(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(FakeCuda)


@pytest.fixture(autouse=True)
def fresh_policy(monkeypatch):
    monkeypatch.setattr(_device, "_warned", set())
    monkeypatch.delenv(_device.ENV, raising=False)
    monkeypatch.setattr(_cca_lib, "_CUDA_COMPILED", False)  # a CPU-only core, whatever this build is


def _cca_inputs():
    g = torch.Generator().manual_seed(0)
    B, N, H, D, C, K, R = 1, 9, 2, 8, 4, 2, 3
    L = -(-N // C)
    q = torch.randn(B, N, H, D, generator=g)
    k = torch.randn(B, L, K, R, H, D, generator=g)
    v = torch.randn(B, L, K, R, H, D, generator=g)
    mask = torch.rand(B, L, K, R, generator=g) > 0.3
    return q, k, v, mask, C


def test_cca_falls_back_to_reference_and_warns_once():
    q, k, v, mask, C = _cca_inputs()
    fq, fk, fv, fm = (fake_cuda(t) for t in (q, k, v, mask))
    assert not _cca_lib.fused_available(fq)
    with pytest.warns(_device.CudaNotCompiledWarning, match=r"chunked_cross_attention.*PYRETRO_CUDA=ON"):
        out = _cca_lib.dispatch(fq, fk, fv, fm, C, 0.5, False, 10000.0)
    ref = chunked_cross_attention_ref(q, k, v, mask, C, scale=0.5)
    torch.testing.assert_close(out.as_subclass(torch.Tensor), ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        _cca_lib.dispatch(fq, fk, fv, fm, C, 0.5, False, 10000.0)


def test_error_mode_names_the_fix(monkeypatch):
    monkeypatch.setenv(_device.ENV, "error")
    q, k, v, mask, C = _cca_inputs()
    with pytest.raises(RuntimeError, match=r"chunked_cross_attention got CUDA tensors.*CUDA wheel.*PYRETRO_CUDA=ON"):
        _cca_lib.dispatch(*(fake_cuda(t) for t in (q, k, v, mask)), C, 0.5, False, 10000.0)


def test_rope_and_gather_use_the_same_policy(monkeypatch):
    import pyretro._ext as ext

    monkeypatch.setattr(ext, "cuda_compiled", lambda: False)
    x = fake_cuda(torch.randn(1, 4, 2, 8))
    with pytest.warns(_device.CudaNotCompiledWarning, match="rope on CUDA tensors"):
        assert rope_mod._kernel(x) is None  # None = run the reference
    assert rope_mod._kernel(torch.randn(1, 4, 2, 8)) is not None  # CPU tensors keep the fused kernel
    with pytest.warns(_device.CudaNotCompiledWarning, match="gather_neighbors on CUDA tensors"):
        gather_mod._warn_no_cuda()
    monkeypatch.setenv(_device.ENV, "error")
    with pytest.raises(RuntimeError, match="rope got CUDA tensors"):
        rope_mod._kernel(x)


def test_silent_mode_and_bad_mode(monkeypatch):
    monkeypatch.setenv(_device.ENV, "silent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _device.cuda_kernels_missing("some_op")
    monkeypatch.setenv(_device.ENV, "loud")
    with pytest.raises(ValueError, match="PYRETRO_CUDA_FALLBACK must be one of"):
        _device.cuda_kernels_missing("some_op")
