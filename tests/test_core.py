"""The compiled core loads, reports its build, maps C++ errors to Python ones, and runs its pool."""

import pytest

import pyretro
from pyretro._ext import _C
from pyretro._tensor import view


def test_build_info_fields():
    info = pyretro.build_info()
    for key in ("version", "cuda_compiled", "cuda_archs", "cuda_runtime_version", "cutlass_version",
                "threads", "compiler", "build_type"):
        assert key in info
    assert info["version"] == pyretro.__version__
    if info["cuda_compiled"]:
        assert "80" in info["cuda_archs"] and "90" in info["cuda_archs"]
        assert info["cuda_runtime_version"] >= 12000


@pytest.mark.parametrize("kind,exc", [("value", ValueError), ("type", TypeError), ("os", OSError),
                                      ("index", IndexError)])
def test_exception_translation(kind, exc):
    with pytest.raises(exc, match="boom"):
        _C._raise(kind, "boom")


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("n,grain", [(0, 1), (1, 1), (17, 4), (100_003, 1000)])
def test_parallel_for_covers_range_once(threads, n, grain):
    old = _C.get_num_threads()
    try:
        pyretro.set_num_threads(threads)
        assert _C._parallel_sum(n, grain) == n * (n - 1) // 2
    finally:
        _C.set_num_threads(old)


def test_view_numpy_and_torch():
    import numpy as np
    import torch

    a = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    ptr, shape, strides, code, dev, idx = view(a, "a")
    assert shape == (3, 2) and strides == (4, 2) and code == 4 and dev == 0
    t = torch.zeros(2, 3, dtype=torch.bfloat16).t()
    _, shape, strides, code, dev, _ = view(t, "t")
    assert shape == (3, 2) and strides == (1, 3) and code == 7
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        view([1, 2], "x")
    with pytest.raises(TypeError, match="complex64"):
        view(torch.zeros(2, dtype=torch.complex64), "z")


def test_cli_info(capsys):
    from pyretro.cli.main import main

    assert main(["info", "--json"]) == 0
    assert '"cuda_compiled"' in capsys.readouterr().out
