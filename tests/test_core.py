"""The compiled core loads, reports its build, maps C++ errors to Python ones, and runs its pool."""

import pytest
import torch

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
    try:
        pyretro.set_num_threads(threads)
        assert _C._parallel_sum(n, grain) == n * (n - 1) // 2
    finally:
        pyretro.set_num_threads(None)


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


class _ThreadsSeen(torch.utils.data.Dataset):
    """Each item: the thread count pyretro's kernels use in this (worker) process, after a kernel call."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        from pyretro.ops import rope

        rope(torch.randn(1, 4, 1, 8), torch.arange(4))
        return _C.get_num_threads()


def test_thread_count_follows_torch_until_pinned():
    from pyretro.ops import rope

    def kernel_threads() -> int:
        rope(torch.randn(1, 4, 1, 8), torch.arange(4))  # any CPU kernel call applies the current setting
        return _C.get_num_threads()

    old = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            assert kernel_threads() == n and pyretro.build_info()["threads"] == n
        pyretro.set_num_threads(2)  # pinned: torch's count no longer applies
        torch.set_num_threads(1)
        assert kernel_threads() == 2 and pyretro.build_info()["threads"] == 2
        pyretro.set_num_threads(None)  # back to following torch
        assert kernel_threads() == 1
        torch.set_num_threads(3)
        # DataLoader workers run with torch at 1 thread; pyretro's kernels there must not spawn more
        loader = torch.utils.data.DataLoader(_ThreadsSeen(), num_workers=1, batch_size=None)
        assert list(loader) == [1, 1]
    finally:
        torch.set_num_threads(old)
        pyretro.set_num_threads(None)
