"""The built wheel installs into a fresh venv and works there with no compiler (tools/check_wheel.sh).

The wheel: ``PYRETRO_TEST_WHEEL`` if set, else a CPU-only wheel built here from this tree's sdist (sdist ->
wheel, so a file missing from the sdist fails too). Torch releases: 2.13.0 always (the CPU wheel pip installs
here); a second release only when ``PYRETRO_TEST_TORCH_ALT`` names one (plus ``PYRETRO_TEST_FIND_LINKS``, a
directory of pre-downloaded wheels): PyPI's Linux x86-64 torch is a CUDA build whose nvidia-* dependencies
are ~2.6 GB, too much to download in every CI run (docs/release.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tools" / "check_wheel.sh"

pytestmark = pytest.mark.slow


def _build_cpu_wheel(out: Path) -> Path:
    env = {**os.environ, "PYRETRO_CUDA": "OFF"}
    try:
        import build  # noqa: F401  (PyPI `build`: sdist first, then the wheel from the sdist)

        cmd = [sys.executable, "-m", "build", "--outdir", str(out), "-C", "cmake.define.PYRETRO_CUDA=OFF", str(ROOT)]
    except ImportError:  # pip alone: the wheel straight from the tree
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out),
               "-C", "cmake.define.PYRETRO_CUDA=OFF", str(ROOT)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"building the wheel failed ({' '.join(cmd)}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    wheels = list(out.glob("pyretro-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("PYRETRO_TEST_WHEEL")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"PYRETRO_TEST_WHEEL={given!r} is not a file")
        return Path(given)
    return _build_cpu_wheel(tmp_path_factory.mktemp("wheel"))


def _check(wheel: Path, torch_version: str, *extra: str) -> str:
    if shutil.which("bash") is None:
        pytest.skip("tools/check_wheel.sh needs bash")
    res = subprocess.run(["bash", str(CHECK), str(wheel), "--torch", torch_version, *extra],
                         capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, f"check_wheel.sh failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    assert f"== torch {torch_version}: PASS" in res.stdout, res.stdout
    return res.stdout


def test_wheel_contents(wheel):
    """One compiled core, stripped, plus the package's Python files; no sources or tests."""
    names = zipfile.ZipFile(wheel).namelist()
    cores = [n for n in names if n.startswith("pyretro/_C") and n.endswith(".so")]
    assert len(cores) == 1, cores
    assert "pyretro/_version.py" in names and "pyretro/ops/reference/cca.py" in names
    assert not [n for n in names if n.startswith(("csrc/", "tests/")) or n.endswith((".cu", ".cpp"))]
    with zipfile.ZipFile(wheel) as z, z.open(cores[0]) as f:
        data = f.read()
    assert b".debug_info" not in data, "debug sections left in the compiled core (expected install.strip)"


def test_fresh_venv_torch_2_13(wheel):
    out = _check(wheel, "2.13.0")
    assert "WHEEL SMOKE OK" in out and "torch=2.13.0" in out


def test_fresh_venv_second_torch(wheel):
    alt = os.environ.get("PYRETRO_TEST_TORCH_ALT")
    if not alt:
        pytest.skip("no second torch release configured: set PYRETRO_TEST_TORCH_ALT=2.12.0 and "
                    "PYRETRO_TEST_FIND_LINKS=DIR (from `pip download -d DIR torch==2.12.0`, ~2.6 GB: PyPI's "
                    "x86-64 Linux torch is a CUDA build); see docs/release.md")
    links = os.environ.get("PYRETRO_TEST_FIND_LINKS")
    out = _check(wheel, alt, *(["--find-links", links] if links else []))
    assert f"torch={alt}" in out
