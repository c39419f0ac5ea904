"""Writes a run's results as JSON and Markdown into benchmarks/results/ (not committed)."""

from __future__ import annotations

import json
import os
import platform
import time

import torch

from harness import HEADER, format_row, summary
from libraries import Library
from plot import save_plot

TOLERANCES = (
    "All IPMs at 1e-8 (Clarabel: tol_gap_abs/rel, tol_feas; ECOS: abstol/reltol/feastol; "
    "Moreau: tol_gap_abs/rel, tol_feas), i.e. every solver's default; qpth: eps=1e-12, "
    "maxIter=20 (its defaults). Inputs are float64."
)


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "loadavg_at_end": tuple(round(x, 2) for x in os.getloadavg()),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None}


def source_fingerprint() -> str:
    """sha256 of convexlayers' source files: which state of the code was measured."""
    import hashlib

    import convexlayers

    root = os.path.dirname(convexlayers.__file__)
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()[:16]


def versions(libs: list[Library]) -> dict:
    import importlib.metadata as md

    names = {lib.package for lib in libs} | {
        "torch", "cvxpy", "numpy", "scipy", "clarabel", "ecos", "scs", "diffcp", "moreau-cpu"}
    out = {}
    for name in sorted(names):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def save_outputs(folder: str, prefix: str, mode: str, payload: dict, text: str) -> str:
    """Write ``payload`` (JSON) and ``text`` (Markdown) as ``{prefix}{mode}-{time}`` and
    ``{prefix}latest-{mode}`` in ``folder``; returns the path of the latter, without suffix."""
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"{prefix}{mode}-{stamp}", f"{prefix}latest-{mode}"):
        with open(os.path.join(folder, name + ".json"), "w") as f:
            json.dump(payload, f, indent=1, default=str)
        with open(os.path.join(folder, name + ".md"), "w") as f:
            f.write(text)
    return os.path.join(folder, f"{prefix}latest-{mode}")


def write_results(rows: list[dict], libs: list[Library], args, repeats: int,
                  budget: float, min_time: float) -> None:
    mode = "quick" if args.quick else "full"
    info = {
        "mode": mode, "threads": args.threads, "repeats": repeats, "budget_s": budget,
        "min_time_s": min_time, "loadavg_at_start": args.loadavg_start,
        "machine": machine(), "versions": versions(libs), "tolerances": TOLERANCES,
        "configs": {lib.name: lib.config for lib in libs},
        "convexlayers_source_sha256": source_fingerprint(),
    }
    lines = [
        f"# convexlayers benchmark ({mode})", "",
        f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; "
        f"{args.threads} thread(s) for every library (torch, BLAS, Rayon, diffcp's pool; "
        f"the process is pinned to CPUs {info['machine']['affinity']}). "
        f"Load average at start / end: {args.loadavg_start} / {info['machine']['loadavg_at_end']} "
        "(other processes share the machine: compare ratios, which are measured interleaved, "
        "rather than absolute times).",
        f"Median of at least {repeats} timed runs and {min_time:g} s (at most 50 runs, "
        f"stopping after ~{budget:g} s) after one warm-up call, following a warm-up of "
        "every library on a tiny QP. Ratio = peer time / convexlayers time (> 1: we are "
        "faster).",
        f"Tolerances: {TOLERANCES}", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f" (convexlayers source sha256 {info['convexlayers_source_sha256']}).", "",
        "| library | configuration |", "|---|---|",
        *(f"| {lib.name} | {lib.config} |" for lib in libs), "",
        "## Results", "", HEADER, "|" + "---|" * 13,
        *(format_row(r) for r in rows), "", "## Summary", "", *summary(rows, libs), "",
    ]
    warned: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        for w in r.get("warnings", []):
            warned.setdefault((r["library"], w), []).append(r["workload"])
    if warned:
        lines += ["## Warnings raised (during construction and warm-up calls)", ""]
        lines += [f"- {lib}: {w} — in {len(ws)} workload(s): {', '.join(ws[:3])}"
                  + (", ..." if len(ws) > 3 else "") for (lib, w), ws in warned.items()]
        lines.append("")
    errors = [r for r in rows if r["status"] == "error"]
    if errors:
        lines += ["## Errors", "", *(f"- {r['workload']} / {r['library']}: {r['error']}"
                                     for r in errors), ""]
    text = "\n".join(lines)
    print("\n" + "\n".join(["## Summary", "", *summary(rows, libs)]))
    latest = save_outputs(args.out, "", mode, {**info, "rows": rows}, text)
    print(f"\nwrote {latest}.{{json,md}}")
    if save_plot(rows, libs, os.path.join(args.out, f"latest-{mode}.png")):
        print(f"wrote {os.path.join(args.out, f'latest-{mode}')}.png")
