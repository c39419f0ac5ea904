"""MkDocs hook: the getting-started and guide pages, generated from MANUAL.md.

MANUAL.md is the reference the project keeps current (README.md is its short front
page); each page below is one or more of its ``## `` sections, taken at build time so
that the site never drifts from it. Links between its sections (``[Errors](#errors)``)
become links between pages; a link to a section the site does not have keeps its text
only. A section that is missing from MANUAL.md stops the build with a message naming it.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File, Files

ROOT = pathlib.Path(__file__).resolve().parents[2]

# page -> (title, MANUAL.md sections, an introduction of the page or "")
PAGES: dict[str, tuple[str, list[str], str]] = {
    "getting-started/pytorch.md": ("PyTorch", ["Quick start (PyTorch)", "`torch.compile`"], ""),
    "getting-started/jax.md": ("JAX", ["JAX"], "`pip install -e \".[jax]\"`, then:"),
    "getting-started/tensorflow.md": ("TensorFlow", ["TensorFlow"], ""),
    "getting-started/mlx.md": ("MLX", ["MLX"], ""),
    "guides/problems.md": ("Problems, parameters and outputs",
                           ["Problems, parameters and outputs"], ""),
    "guides/solvers.md": ("Solvers and `solver_args`", ["Solvers and `solver_args`"], ""),
    "guides/batching.md": ("Batching", ["Batching"], ""),
    "guides/duals.md": ("Dual variables", ["Dual variables"], ""),
    "guides/gp.md": ("Log-log convex programs (`gp=True`)",
                     ["Log-log convex programs (`gp=True`)"],
                     "See also the [geometric-program design](../gallery/gp_design.md) example."),
    "guides/gradients.md": ("Gradients: how, how accurate, and the adjoint",
                            ["Gradients: how, how accurate, and the adjoint"], ""),
    "guides/diagnostics.md": ("Diagnostics: `layer.info`", ["Diagnostics: `layer.info`"], ""),
    "guides/errors.md": ("Errors", ["Errors"], ""),
    "guides/reliability.md": ("Reliability", ["Reliability"], ""),
    "guides/distributed.md": ("Distributed training and clusters",
                              ["Distributed training", "Batches on a cluster: `executor=`"], ""),
    "guides/warm-starts.md": ("Warm starts", ["Warm starts"], ""),
    "guides/performance.md": ("Performance", ["Speed", "How it works"], ""),
    "guides/migration.md": ("Migrating from cvxpylayers", ["Coming from cvxpylayers"], ""),
}


def slug(title: str) -> str:
    """The anchor GitHub and MkDocs give a heading: lower case, words joined by '-'."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title.strip().lower()))


def sections(readme: str) -> dict[str, str]:
    """MANUAL.md's ``## `` sections by title (their subsections are ``#### `` headings)."""
    parts = re.split(r"^## (.+)$", readme, flags=re.M)
    return {title.strip(): body.strip("\n")
            for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def link_targets() -> dict[str, str]:
    """MANUAL.md anchor -> the page (and anchor) that holds that section."""
    targets = {"install": "../index.md#install"}
    for page, (_, titles, _) in PAGES.items():
        for title in titles:
            anchor = "" if len(titles) == 1 else f"#{slug(title)}"
            targets[slug(title)] = f"../{page}{anchor}"
    return targets


def render(page: str, found: dict[str, str]) -> str:
    title, titles, intro = PAGES[page]
    missing = [t for t in titles if t not in found]
    if missing:
        raise ValueError(f"docs/hooks/readme.py: MANUAL.md has no section '## {missing[0]}' "
                         f"for {page}; update PAGES to MANUAL.md's headings")
    if len(titles) == 1:  # the page is the section: its subsections become ##
        body = re.sub(r"^#{3,4} ", "## ", found[titles[0]], flags=re.M)
    else:
        body = "\n\n".join(f"## {t}\n\n" + re.sub(r"^#{3,4} ", "### ", found[t], flags=re.M)
                           for t in titles)
    targets = link_targets()

    def relink(match: re.Match) -> str:
        text, anchor = match.group(1), match.group(2)
        return f"[{text}]({targets[anchor]})" if anchor in targets else text

    body = re.sub(r"\[([^\]]+)\]\(#([^)]+)\)", relink, body)
    source = "*Generated from MANUAL.md of the repository.*"
    return "\n\n".join(p for p in (f"# {title}", intro, body, source) if p) + "\n"


def on_files(files: Files, config) -> Files:
    found = sections((ROOT / "MANUAL.md").read_text(encoding="utf-8"))
    for page in PAGES:
        files.append(File.generated(config, page, content=render(page, found)))
    return files
