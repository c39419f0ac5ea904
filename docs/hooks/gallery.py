"""MkDocs hook: the gallery's figures, made at build time, never committed.

Each gallery page shows ``gallery/img/<example>.png``, taken from the first of:

1. ``$CONVEXLAYERS_GALLERY_FIGURES/<example>.png`` when that folder is set
   (``tests/test_examples.py`` passes the figures of the quick runs it just made);
2. ``out/examples/<example>.png``, the full-size figure of ``make examples``;
3. ``out/gallery/<example>.png``, made here if missing by running the example in
   quick mode (``python examples/<example>.py --quick --out out/gallery``, a few
   seconds each; ``make docs`` empties out/gallery first).
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
    given = os.environ.get("CONVEXLAYERS_GALLERY_FIGURES")
    folder = pathlib.Path(given) if given else ROOT / "out" / "gallery"
    env = {**os.environ, "CONVEXLAYERS_EXAMPLES_NO_BAR": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in gallery():
        figure = folder / f"{name}.png"
        full = ROOT / "out" / "examples" / f"{name}.png"
        if not given and full.exists():
            figure = full
        elif not figure.exists():
            print(f"gallery: running examples/{name}.py --quick for its figure", file=sys.stderr)
            run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick",
                                  "--out", str(folder)], env=env, cwd=ROOT,
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"examples/{name}.py --quick failed:\n{run.stderr}")
        files.append(File.generated(config, f"gallery/img/{name}.png", abs_src_path=str(figure)))
    return files
