"""The built wheel carries every file the package reads at run time, not only its .py modules.

An editable install (what `npm test` makes) reads python/ itself, so a data file missing from the
wheel shows only once someone installs the package for real: the declarations in _data/ (families,
training options, config and manifest rules) and hf_remote's model card. This builds the wheel from
a copy of python/ (so no build/ or egg-info lands in the tree) with setuptools, the build backend
pyproject.toml names, and compares its file list with the package folder's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[1]
PACKAGE = PYTHON_DIR / "flm_grow_torch"


def test_wheel_has_every_package_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        PYTHON_DIR,
        src,
        ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"),
    )
    out = tmp_path / "wheel"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("flm_grow_torch-*.whl")
    in_wheel = {n for n in zipfile.ZipFile(whl).namelist() if n.startswith("flm_grow_torch/")}
    in_tree = {
        p.relative_to(PYTHON_DIR).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert sorted(in_tree - in_wheel) == []
