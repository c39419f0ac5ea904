"""MkDocs hook: the gallery's figures, made at build time, never committed.

Each gallery page shows ``gallery/img/<example>.png``. The figures are taken from
``$CONVEXLAYERS_GALLERY_FIGURES`` when that folder is set (``tests/test_examples.py``
passes the figures of the quick runs it just made), else from ``out/gallery/``; an
example whose figure is missing there is run in quick mode to make it
(``python examples/<example>.py --quick --out <folder>``, a few seconds each).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from mkdocs.structure.files import File, Files

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def gallery() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.py")
                  if not p.stem.startswith("_") and p.stem != "quickstart")


def on_files(files: Files, config) -> Files:
    folder = pathlib.Path(os.environ.get("CONVEXLAYERS_GALLERY_FIGURES", ROOT / "out" / "gallery"))
    env = {**os.environ, "CONVEXLAYERS_EXAMPLES_NO_BAR": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in gallery():
        figure = folder / f"{name}.png"
        if not figure.exists():
            print(f"gallery: running examples/{name}.py --quick for its figure", file=sys.stderr)
            subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick",
                            "--out", str(folder)], check=True, env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
        files.append(File.generated(config, f"gallery/img/{name}.png", abs_src_path=str(figure)))
    return files
