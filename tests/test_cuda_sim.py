"""The CUDA rope and gather kernels' per-thread code, run on the CPU (tests/cuda_sim/sim_main.cpp).

The kernel bodies in csrc/ops/cuda/*_kernel.cuh take thread/block indices as arguments, so a host build
can run every thread of the launch the .cu files make and compare with the CPU kernels on random shapes,
layouts, strides, dtypes and ids. This checks the CUDA indexing and vector widths on machines without a
GPU; the @cuda tests in test_rope.py / test_gather_op.py check the real device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    "tests/cuda_sim/sim_main.cpp",
    "csrc/ops/cpu/rope_cpu.cpp",
    "csrc/ops/cpu/rope_check.cpp",
    "csrc/api/parallel.cpp",
    "csrc/store/gather.cpp",
]


def _cuda_include() -> Path | None:
    """Directory with cuda_fp16.h / cuda_bf16.h (host-usable headers of the CUDA toolkit)."""
    candidates = []
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    return next((c for c in candidates if (c / "cuda_fp16.h").is_file() and (c / "cuda_bf16.h").is_file()), None)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory) -> Path:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    inc = _cuda_include()
    if cxx is None or inc is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit headers (cuda_fp16.h)")
    exe = tmp_path_factory.mktemp("cuda_sim") / "sim"  # -O0: the build dominates (~10 s), the run is short
    cmd = [cxx, "-O0", "-std=c++17", "-w", f"-I{ROOT / 'csrc/include'}", f"-I{ROOT / 'csrc'}", f"-I{inc}",
           *(str(ROOT / s) for s in SOURCES), "-pthread", "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"simulator build failed:\n{res.stderr[-3000:]}"
    return exe


def test_cuda_kernels_match_cpu_kernels_in_simulation(simulator):
    res = subprocess.run([str(simulator), "200"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK 1600 cases"), res.stdout[-3000:]
