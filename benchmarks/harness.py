"""Timing, cross-checking and reporting for ``run.py``."""

from __future__ import annotations

import math
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from libraries import Library
from workloads import Workload, dense_qp

# Flag a peer whose solution (gradient) differs from ours by more than this, relative
# to max(1, max |ours|): a sign of a wrong answer or of a loose tolerance, not of noise.
SOL_FLAG, GRAD_FLAG = 1e-4, 1e-3


@dataclass
class Timing:
    """A measured callable: its warm-up time and the timed calls so far."""

    fn: Callable
    warm: float
    times: list[float] = field(default_factory=list)

    def done(self, repeats: int, budget: float, min_time: float, max_repeats: int) -> bool:
        spent = sum(self.times)
        if self.warm > 5 * budget or len(self.times) >= max_repeats:
            return True
        if len(self.times) >= repeats and spent >= min_time:
            return True
        return bool(self.times) and self.warm + spent >= budget

    def run(self) -> None:
        t0 = time.perf_counter()
        self.fn()
        self.times.append(time.perf_counter() - t0)

    def median(self) -> tuple[float, int]:
        """Median of the timed calls, or the warm-up time alone (0 calls) if none ran."""
        return (statistics.median(self.times), len(self.times)) if self.times else (self.warm, 0)


def _first_call(fn: Callable) -> tuple[object, Timing]:
    t0 = time.perf_counter()
    result = fn()
    return result, Timing(fn, time.perf_counter() - t0)


def warm_up(libs: list[Library], threads: int) -> None:
    """Import every library and run each once on a tiny QP, so that no measured call
    pays for first-use costs (imports, lazy backend set-up, dispatcher caches)."""
    tiny = dense_qp(4, 2)
    values = tiny.values(0)
    for lib in libs:
        try:
            call = lib.make(tiny, threads)
            with torch.no_grad():
                call([torch.tensor(v) for v in values], False)
            leaves = [torch.tensor(v, requires_grad=True) for v in values]
            sum(o.sum() for o in call(leaves, True)).backward()
        except Exception:  # reported when the library is measured
            pass


def _max_diff(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> tuple[float, float]:
    """max |a − b| and that divided by max(1, max |b|); None counts as zero."""
    diff, scale = 0.0, 1.0
    for x, y in zip(a, b, strict=True):
        y = torch.zeros(()) if y is None else y.detach()
        x = torch.zeros_like(y) if x is None else x.detach()
        diff = max(diff, float((x - y).abs().max()) if y.numel() else 0.0)
        scale = max(scale, float(y.abs().max()) if y.numel() else 0.0)
    return diff, diff / scale


def _set_up(lib: Library, w: Workload, values, threads: int) -> tuple[dict, list[Timing]]:
    """Construct the layer, make the warm-up calls (kept for the cross-check)."""
    row: dict = {"workload": w.name, "family": w.family, "label": w.label,
                 "library": lib.name, "status": "ok"}
    reason = lib.supports(w)
    if reason:
        return {**row, "status": "n/a", "error": reason}, []
    timings: list[Timing] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            t0 = time.perf_counter()
            call = lib.make(w, threads)
            row["construct_s"] = time.perf_counter() - t0
            plain = [torch.tensor(v) for v in values]

            def forward():
                with torch.no_grad():
                    return call(plain, False)

            outs, fwd = _first_call(forward)
            cot_rng = np.random.default_rng(1)
            cots = [torch.tensor(cot_rng.standard_normal(tuple(o.shape))) for o in outs]
            leaves = [torch.tensor(v, requires_grad=True) for v in values]

            def both():
                for leaf in leaves:
                    leaf.grad = None
                res = call(leaves, True)
                sum((o * c).sum() for o, c in zip(res, cots, strict=True)).backward()
                return [leaf.grad for leaf in leaves]

            grads, bwd = _first_call(both)
            row["outputs"], row["grads"] = list(outs), grads
            timings = [fwd, bwd]
        except Exception as err:  # a peer failing is a result, not a crash
            row["status"] = "error"
            row["error"] = f"{type(err).__name__}: {str(err).strip()[:300]}"
            row["traceback"] = traceback.format_exc(limit=4)[-1500:]
    msgs = sorted({f"{c.category.__name__}: {str(c.message)[:160]}" for c in caught})
    if msgs:
        row["warnings"] = msgs[:4]
    return row, timings


def measure_workload(w: Workload, libs: list[Library], threads: int, repeats: int,
                     budget: float, min_time: float, max_repeats: int = 50) -> list[dict]:
    """Measure every library on ``w``; the first library (ours) is the reference.

    Timed calls are interleaved: round after round, each library in turn (in a rotating
    order) makes one forward and one forward+backward call, so a burst of load from
    elsewhere on the machine hits every library alike.
    """
    values = w.values(0)
    print(f"\n## {w.name}  (cones: {w.cones})", flush=True)
    rows, timings = [], []
    for lib in libs:
        row, t = _set_up(lib, w, values, threads)
        rows.append(row)
        timings.append(t)
    active = [i for i, t in enumerate(timings) if t]
    rnd = 0
    while active:
        active = active[rnd % len(active):] + active[: rnd % len(active)]
        for i in active:
            for t in timings[i]:
                if not t.done(repeats, budget, min_time, max_repeats):
                    t.run()
        active = [i for i in active
                  if not all(t.done(repeats, budget, min_time, max_repeats) for t in timings[i])]
        rnd += 1
    ref = rows[0]
    for row, t in zip(rows, timings, strict=True):
        if t:
            (row["fwd_s"], row["fwd_n"]), (row["fwdbwd_s"], row["fwdbwd_n"]) = (
                t[0].median(), t[1].median())
            row["fwd_min_s"], row["fwdbwd_min_s"] = (min(x.times or [x.warm]) for x in t)
            # The backward alone: forward+backward minus forward (medians, floored at 0).
            row["bwd_s"] = max(row["fwdbwd_s"] - row["fwd_s"], 0.0)
            row["bwd_over_fwd"] = row["bwd_s"] / row["fwd_s"]
        if row["status"] == "ok" and ref["status"] == "ok":
            for key in ("fwd", "bwd", "fwdbwd"):
                if ref[f"{key}_s"] > 0:
                    row[f"{key}_ratio"] = row[f"{key}_s"] / ref[f"{key}_s"]
            row["sol_diff"], row["sol_rel"] = _max_diff(row["outputs"], ref["outputs"])
            row["grad_diff"], row["grad_rel"] = _max_diff(row["grads"], ref["grads"])
            row["flag"] = row["sol_rel"] > SOL_FLAG or row["grad_rel"] > GRAD_FLAG
        print(format_row(row), flush=True)
    for row in rows:
        row.pop("outputs", None)
        row.pop("grads", None)
    return rows


def _ms(x) -> str:
    return "—" if x is None else f"{1e3 * x:.1f}"


def _ratio(x) -> str:
    return "—" if x is None else f"{x:.2f}x"


def _fraction(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def _sci(x) -> str:
    return "—" if x is None else f"{x:.1e}"


HEADER = ("| workload | library | construct (s) | fwd (ms) | fwd ratio | bwd (ms) | bwd ratio "
          "| bwd/fwd | fwd+bwd (ms) | fwd+bwd ratio | max abs Δx | max abs Δgrad | note |")


def format_row(r: dict) -> str:
    if r["status"] != "ok":
        return f"| {r['workload']} | {r['library']} | {r['status']}: {r.get('error', '')} |"
    note = "**LARGE DIFF**" if r.get("flag") else ""
    if min(r.get("fwd_n", 1), r.get("fwdbwd_n", 1)) == 0:
        note += " (single cold run)"
    bwd_ratio = r.get("bwd_ratio") if r.get("bwd_s") else None
    return (f"| {r['workload']} | {r['library']} | {r['construct_s']:.2f} | {_ms(r['fwd_s'])} "
            f"| {_ratio(r.get('fwd_ratio'))} | {_ms(r.get('bwd_s'))} | {_ratio(bwd_ratio)} "
            f"| {_fraction(r.get('bwd_over_fwd'))} | {_ms(r['fwdbwd_s'])} "
            f"| {_ratio(r.get('fwdbwd_ratio'))} | {_sci(r.get('sol_diff'))} "
            f"| {_sci(r.get('grad_diff'))} | {note.strip()} |")


def _gm(rows: list[dict], key: str) -> str:
    if not rows:
        return "—"
    return f"{math.exp(statistics.fmean(math.log(r[key]) for r in rows)):.2f}x"


def summary(rows: list[dict], libs: list[Library]) -> list[str]:
    """Geometric-mean ratios per peer (all workloads run, and only those whose results
    agree with ours), and on how many workloads each peer beats us."""
    lines = ["| library | workloads run | geo-mean fwd / fwd+bwd ratio | same, from min times "
             "| same, agreeing results only (n) | faster than us (fwd / fwd+bwd) |",
             "|---|---|---|---|---|---|"]
    ref = {r["workload"]: r for r in rows if r["library"] == libs[0].name}
    for lib in libs[1:]:
        ok = [r for r in rows if r["library"] == lib.name and "fwd_ratio" in r]
        for r in ok:
            base = ref[r["workload"]]
            r["fwd_min_ratio"] = r["fwd_min_s"] / base["fwd_min_s"]
            r["fwdbwd_min_ratio"] = r["fwdbwd_min_s"] / base["fwdbwd_min_s"]
        agree = [r for r in ok if not r["flag"]]
        faster = [sum(r[k] < 1 for r in ok) for k in ("fwd_ratio", "fwdbwd_ratio")]
        lines.append(
            f"| {lib.name} | {len(ok)} | {_gm(ok, 'fwd_ratio')} / {_gm(ok, 'fwdbwd_ratio')} "
            f"| {_gm(ok, 'fwd_min_ratio')} / {_gm(ok, 'fwdbwd_min_ratio')} "
            f"| {_gm(agree, 'fwd_ratio')} / {_gm(agree, 'fwdbwd_ratio')} ({len(agree)}) "
            f"| {faster[0]} / {faster[1]} |")
    return lines
