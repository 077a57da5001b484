"""Re-runs the C++-facing tests against an AddressSanitizer + UBSan build of the core.

The sanitized extension is built with CMake into build/asan (CPU only) from the source tree and loaded
through PYRETRO_C_PATH in a subprocess, with libasan preloaded (Python itself is not instrumented).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tests whose every path goes through C++ code that takes raw pointers.
SANITIZED_TESTS = ["tests/test_sanitizers.py", "tests/test_core.py", "tests/test_store*.py", "tests/test_cca.py", "tests/test_rope.py",
                   "tests/test_gather_op.py"]


def _runtime(name: str) -> str | None:
    cc = shutil.which("c++") or shutil.which("g++")
    if not cc:
        return None
    out = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return out if os.path.isabs(out) and os.path.exists(out) else None


@pytest.mark.slow
def test_sanitized_build_passes_core_tests():
    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("needs the source tree")
    libasan = _runtime("libasan.so")
    if os.environ.get("PYRETRO_C_PATH"):
        pytest.skip("already running against another build of the core")
    if not libasan or not shutil.which("cmake") or not shutil.which("ninja"):
        pytest.skip("needs a C++ compiler with libasan, cmake and ninja")
    env = dict(os.environ, PYRETRO_CUDA="OFF", PYRETRO_SANITIZE="address;undefined", BUILD_DIR="build/asan",
               BUILD_TYPE="RelWithDebInfo", PYTHON=sys.executable)
    build = subprocess.run(["bash", "tools/dev_build.sh", "--no-link"], cwd=ROOT, env=env, capture_output=True,
                           text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    so = build.stdout.strip().splitlines()[-1]

    files = sorted({str(p.relative_to(ROOT)) for pat in SANITIZED_TESTS for p in ROOT.glob(pat)})
    # libstdc++ is preloaded too: ASan must intercept __cxa_throw, and python itself does not link it.
    run_env = dict(os.environ, PYRETRO_C_PATH=str(ROOT / so), PYRETRO_EXPECT_SANITIZE="address,undefined",
                   LD_PRELOAD=f"{libasan} {_runtime('libstdc++.so') or ''}".strip(),
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=86",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87",
                   PYTHONPATH=str(ROOT / "tests"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
                           "not slow and not cuda", "-k", "not compile", *files],
                          cwd=ROOT, env=run_env, capture_output=True, text=True)
    tail = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, tail
    assert "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr, tail


def test_sanitized_build_reports_itself():
    """The sanitizer option reaches build_info (so a run can tell which build it is testing)."""
    from pyretro import build_info

    assert build_info()["sanitize"] == os.environ.get("PYRETRO_EXPECT_SANITIZE", "")
