"""The built wheel installs into a fresh venv and works there with no compiler (tools/check_wheel.sh).

The wheel: ``PYRETRO_TEST_WHEEL`` if set, else a CPU-only wheel built here from this tree's sdist (sdist ->
wheel, so a file missing from the sdist fails too). Torch releases: 2.13.0 always (the CPU wheel pip installs
here), and a second release beside the same wheel: ``PYRETRO_TEST_TORCH_ALT`` if set (``none`` skips it; with
``PYRETRO_TEST_FIND_LINKS``, a directory of pre-downloaded wheels), else the newest other torch release that
pip can take from local disk (its ``find-links`` directories and ``file://`` indexes, for this Python and
machine). PyPI's Linux x86-64 torch is a CUDA build of ~3 GB with its nvidia-* dependencies, so the test never
downloads one by itself; on this project's machines torch 2.14.1 and its dependencies lie on disk (~2 min).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tools" / "check_wheel.sh"

pytestmark = pytest.mark.slow


def _pip_local_dirs() -> list[Path]:
    """Local wheel directories and ``file://`` index roots pip is configured with (config files + env)."""
    res = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    values = re.findall(r"(?:find-links|index-url|extra-index-url)='([^']*)'", res.stdout)
    values += [os.environ.get(v, "") for v in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")]
    dirs = []
    for entry in " ".join(values).split():
        path = Path(entry.removeprefix("file://"))
        if (entry.startswith("file://") or not re.match(r"^\w+://", entry)) and path.is_dir():
            dirs.append(path)
    return dirs


def local_torch_releases() -> list[str]:
    """torch versions (newest first) pip can install from local disk for this Python and machine."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    pattern = re.compile(rf"torch-(\d+\.\d+\.\d+)(?:\+\w+)?-{tag}-{tag}-\w*{platform.machine()}\.whl")
    found: set[str] = set()
    for root in _pip_local_dirs():
        names = [p.name for p in root.glob("torch-*.whl")]  # a find-links directory
        page = root / "torch" / "index.html"                 # a PEP 503 index on disk
        if page.is_file():
            names += re.findall(r"torch-[^\"#<>/]+\.whl", page.read_text(errors="replace"))
        found.update(m.group(1) for n in names if (m := pattern.fullmatch(n)))
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))), reverse=True)


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
    """The same wheel beside another torch release: the core links no libtorch, so one wheel serves both."""
    alt = os.environ.get("PYRETRO_TEST_TORCH_ALT", "")
    if alt.lower() == "none":
        pytest.skip("PYRETRO_TEST_TORCH_ALT=none")
    if not alt:
        others = [v for v in local_torch_releases() if v != "2.13.0"]
        if not others:
            pytest.skip("no second torch release on local disk: set PYRETRO_TEST_TORCH_ALT=VERSION (and "
                        "PYRETRO_TEST_FIND_LINKS=DIR from `pip download -d DIR torch==VERSION`); docs/release.md")
        alt = others[0]
    assert alt != "2.13.0", "the second torch release must differ from the first (2.13.0)"
    links = os.environ.get("PYRETRO_TEST_FIND_LINKS")
    out = _check(wheel, alt, *(["--find-links", links] if links else []))
    assert f"torch={alt}" in out


def test_local_torch_releases_reads_find_links(tmp_path, monkeypatch):
    """The second-release lookup sees a wheelhouse from the environment, for this Python and machine only."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    machine = platform.machine()
    for name in (f"torch-2.99.1+cpu-{tag}-{tag}-manylinux_2_28_{machine}.whl",   # ours
                 f"torch-2.98.0-cp27-cp27-manylinux_2_28_{machine}.whl",          # another Python
                 f"torch-2.97.0-{tag}-{tag}-macosx_11_0_arm64.whl"):              # another machine
        (tmp_path / name).write_bytes(b"not a real wheel")
    index = tmp_path / "simple" / "torch"
    index.mkdir(parents=True)
    (index / "index.html").write_text(f'<a href="../../files/torch-2.99.2-{tag}-{tag}-linux_{machine}.whl#sha256=0">x</a>')
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"file://{tmp_path / 'simple'}")
    found = local_torch_releases()
    assert found[:2] == ["2.99.2", "2.99.1"]
    assert "2.98.0" not in found and "2.97.0" not in found
