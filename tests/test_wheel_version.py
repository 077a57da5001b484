"""The version comes from one place (pyretro/_version.py) and every consumer agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pyretro
from pyretro._ext import _C

ROOT = Path(__file__).resolve().parents[1]


def test_build_reads_the_version_file():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in cfg["project"]["dynamic"] and "version" not in cfg["project"]
    assert cfg["tool"]["scikit-build"]["metadata"]["version"]["input"] == "pyretro/_version.py"
    text = (ROOT / "pyretro" / "_version.py").read_text()
    found = re.findall(r'__version__\s*=\s*"([^"]+)"', text)  # what the regex provider extracts
    assert found == [pyretro.__version__]


def test_core_and_info_report_it():
    # the compiled core gets it from CMake (SKBUILD_PROJECT_VERSION); a stale core shows up here
    assert _C.build_info()["version"] == pyretro.__version__
    assert pyretro.build_info()["version"] == pyretro.__version__


def test_changelog_has_the_version():
    log = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(pyretro.__version__)}\] - \d{{4}}-\d\d-\d\d$", log, re.M), \
        f"CHANGELOG.md has no '## [{pyretro.__version__}] - YYYY-MM-DD' section"
