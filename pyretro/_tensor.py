"""Describe torch tensors and numpy arrays to the C++ core without linking libtorch.

``view(x)`` returns ``(data_ptr, shape, strides_in_elements, dtype_code, device_type, device_index)``;
``csrc/api/pyconv.h`` reads the same tuple. The dtype codes match ``csrc/include/pyretro/tensor_view.h``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DTYPE_CODES: dict[str, int] = {
    "bool": 0, "uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5,
    "float16": 6, "bfloat16": 7, "float32": 8, "float64": 9, "uint16": 10, "uint32": 11,
}

ViewTuple = tuple[int, tuple[int, ...], tuple[int, ...], int, int, int]


def _dtype_code(name: str, what: str) -> int:
    try:
        return DTYPE_CODES[name]
    except KeyError:
        raise TypeError(f"{what}: dtype {name} is not supported by pyretro's core") from None


def view(x: Any, name: str = "tensor") -> ViewTuple:
    """A view tuple for a torch.Tensor or numpy array (no copy; the caller keeps ``x`` alive)."""
    if isinstance(x, np.ndarray):
        itemsize = x.dtype.itemsize
        if any(s % itemsize for s in x.strides):
            raise ValueError(f"{name}: strides are not a multiple of the item size")
        return (
            x.__array_interface__["data"][0],
            tuple(int(s) for s in x.shape),
            tuple(int(s) // itemsize for s in x.strides),
            _dtype_code(x.dtype.name, name),
            0,
            -1,
        )
    import torch

    if isinstance(x, torch.Tensor):
        dev = x.device
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"{name}: device {dev} is not supported (cpu or cuda only)")
        return (
            x.data_ptr(),
            tuple(x.shape),
            tuple(x.stride()),
            _dtype_code(str(x.dtype).removeprefix("torch."), name),
            0 if dev.type == "cpu" else 1,
            -1 if dev.index is None else dev.index,
        )
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def cuda_stream(x: Any) -> int:
    """The raw handle of torch's current CUDA stream on ``x``'s device (0 for CPU tensors)."""
    import torch

    if isinstance(x, torch.Tensor) and x.is_cuda:
        return torch.cuda.current_stream(x.device).cuda_stream
    return 0
