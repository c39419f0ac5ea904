"""Shared plumbing of the example scripts: command line, output folder, figures.

Every example has ``main(quick=False, out=None) -> dict``: ``quick=True`` runs the same
code path with fewer iterations (what ``tests/test_examples.py`` and the documentation
build run), ``out`` is the folder its figure is saved into (default ``out/examples``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

T = TypeVar("T")

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "out" / "examples"


def cli(doc: str | None) -> tuple[bool, pathlib.Path]:
    """Parse ``--quick`` and ``--out DIR`` for an example's ``__main__``."""
    summary = (doc or "").strip().splitlines()[0] if doc else None
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument("--quick", action="store_true",
                        help="few iterations, same code path (what the tests run)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                        help=f"folder for the figure (default {DEFAULT_OUT})")
    args = parser.parse_args()
    return args.quick, args.out


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A tqdm progress bar; CONVEXLAYERS_EXAMPLES_NO_BAR=1 turns it off (tests, docs)."""
    disable = os.environ.get("CONVEXLAYERS_EXAMPLES_NO_BAR") == "1"
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=False,
                     dynamic_ncols=True))


def save(fig: plt.Figure, out: pathlib.Path | str | None, name: str) -> pathlib.Path:
    """Save ``fig`` as ``out/name.png``, close it and return the path."""
    folder = pathlib.Path(out) if out is not None else DEFAULT_OUT
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_agreement(ax: plt.Axes, steps: np.ndarray, gaps: dict[str, np.ndarray], xlabel: str,
                   ylabel: str, title: str, tolerance: float = 1e-10) -> None:
    """Per step, the largest differences between two runs that should agree (log scale,
    exact zeros drawn at the bottom), against the tolerance their test allows."""
    floor = np.finfo(np.float64).eps * 1e-2
    for (name, gap), marker in zip(gaps.items(), "os^", strict=False):
        ax.semilogy(steps, np.maximum(gap, floor), marker, ms=4, alpha=0.8, label=name)
    ax.axhline(tolerance, color="tab:red", lw=1, ls=":",
               label=f"tolerance of the test ({tolerance:g})")
    top = max(10 * tolerance, 10 * max(g.max() for g in gaps.values()))
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(floor / 3, top), title=title)
    ax.legend(fontsize=8)


def report(title: str, metrics: dict[str, float | str]) -> None:
    """Print the final metrics of an example, one per line."""
    print(title)
    for key, value in metrics.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"  {key}: {text}")
