"""The package as users get it: build the sdist and the wheel, install the wheel into a
fresh virtual environment, and run the README's quick start from there.

Nothing is downloaded. The build runs without isolation (setuptools from this
environment, see the ``dev`` group), on a copy of the files an sdist is made from, so the
source tree is never written to. The fresh environment is made without pip; this
environment's pip installs the wheel into it, and its dependencies (numpy, cvxpy, torch,
...) come from this environment's site-packages through a ``.pth`` file. That file only
appends directories to ``sys.path``: the ``.pth`` files inside them, among them the
editable install's path to ``src/``, are not processed. The test checks that
``convexlayers`` is imported from the fresh environment, not from the source tree.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import site
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

pytestmark = pytest.mark.packaging

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SDIST_INPUTS = ("pyproject.toml", "README.md", "MANUAL.md", "MANIFEST.in", "src", "tests")
_GENERATED = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".*_cache")


def _run(cmd: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _readme_quickstart() -> str:
    """The first Python block of the README's PyTorch quick start, as users copy it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start (PyTorch)", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README.md: no Python block in the quick start"
    return match.group(1)


_CHECKS = textwrap.dedent(
    """
    import importlib.metadata, pathlib, sys
    import convexlayers

    prefix = pathlib.Path(sys.prefix).resolve()
    package = pathlib.Path(convexlayers.__file__).resolve().parent
    assert package.is_relative_to(prefix), f"imported from {package}, not from {prefix}"
    assert (package / "py.typed").is_file(), "py.typed is not installed"
    dist = importlib.metadata.distribution("convexlayers")
    assert pathlib.Path(dist.locate_file("")).resolve().is_relative_to(prefix)
    assert solution.shape == (n,), solution.shape
    assert A_tch.grad is not None and bool(torch.isfinite(A_tch.grad).all())
    assert b_tch.grad is not None and bool(torch.isfinite(b_tch.grad).all())
    print("installed:", package, dist.version)
    """
)


def test_wheel_installs_and_runs_readme_quickstart(tmp_path):
    # 1. The sdist from a copy of its inputs, and the wheel from the sdist.
    source = tmp_path / "source"
    source.mkdir()
    for name in _SDIST_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=_GENERATED)
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
         cwd=tmp_path)
    (sdist,) = dist.glob("convexlayers-*.tar.gz")
    (wheel,) = dist.glob("convexlayers-*.whl")

    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("README.md", "pyproject.toml", "src/convexlayers/py.typed",
                   "tests/zoo.py", "tests/fd.py"):
        assert needed in in_sdist, f"sdist lacks {needed}"
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in in_sdist)

    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
        (metadata_name,) = (n for n in in_wheel if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(metadata_name).decode()
    assert "convexlayers/py.typed" in in_wheel
    assert {n.split("/", 1)[0] for n in in_wheel} == {"convexlayers", metadata_name.split("/")[0]}
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in in_wheel)
    assert "License-Expression: Apache-2.0" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
    assert "## Quick start (PyTorch)" in metadata  # the README is the long description

    # 2. A fresh environment with the wheel; dependencies from this environment.
    env_dir = tmp_path / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], cwd=tmp_path)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
          "--no-deps", "--no-index", "--no-cache-dir", str(wheel)], cwd=tmp_path)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=tmp_path).strip()
    deps = [p for p in site.getsitepackages() if pathlib.Path(p).is_dir()]
    (pathlib.Path(purelib) / "_test_dependencies.pth").write_text("\n".join(deps) + "\n")

    # 3. The README example, run by the fresh environment's Python outside the source tree.
    script = tmp_path / "quickstart.py"
    script.write_text(_readme_quickstart() + _CHECKS)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = _run([str(python), "-I", str(script)], cwd=tmp_path, env=env)
    assert "installed:" in out
