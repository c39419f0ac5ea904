"""Many small problems: this process vs a process pool vs a Dask cluster, forward + backward.

(Not named distributed.py: a file of that name here would shadow Dask's ``distributed``
package for every script in this folder, and in the Dask workers they start.)

    python benchmarks/executors.py            # batches 256 .. 100,000 (about 5 minutes)
    python benchmarks/executors.py --quick    # batches 256 .. 4,096 (under 2 minutes)

One PyTorch ``CvxpyLayer`` (``solver="CLARABEL"``: per-element solves, which an executor
spreads; the default adjoint) per problem, run three ways on
the same batch: in this process (the solves on one thread per core, polishing and
derivatives on one), with ``layer.executor`` a ``ProcessPoolExecutor`` of ``--workers``
spawned processes, and with ``layer.executor`` a Dask ``LocalCluster`` of ``--workers``
worker processes of one thread each (``client.get_executor()``). The executors get the
library's default chunks (max(128, ceil(B/64)) elements; ``--chunk-size`` to change)
and each worker solves on one thread, so every way has the same cores. BLAS runs on one
thread everywhere (the matrices are tiny; set OPENBLAS_NUM_THREADS to override).

Timed: the median wall-clock time of a forward pass plus the backward pass of a fixed
random cotangent, after warm-up, the three ways interleaved round by round. The speed-up
is in-process time / executor time; the crossover is the smallest batch from which on the
executor is faster at every larger batch measured. The executors' solutions and
gradients are compared with in-process ones (max abs difference). Results (JSON,
Markdown, PNG) go to benchmarks/results/distributed-*. Nothing here asserts on times.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads (here and in spawned workers)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import cvxpy as cp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import convexlayers  # noqa: E402
from convexlayers.torch import CvxpyLayer  # noqa: E402
from report import save_outputs  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FULL_BATCHES = (256, 1_024, 4_096, 16_384, 50_000, 100_000)
QUICK_BATCHES = (256, 512, 1_024, 2_048, 4_096)
MODES = ("in-process", "process pool", "dask")
WORKER_ENV = {"CONVEXLAYERS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# -- problems -------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """A problem with seeded batched parameter values."""

    problem: cp.Problem
    params: list[cp.Parameter]
    variables: list[cp.Variable]
    positive: tuple[bool, ...]  # which parameters' values must be positive

    def values(self, batch: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        values = [rng.normal(size=(batch, *p.shape)) for p in self.params]
        return [np.abs(v) + 0.5 if pos else v for v, pos in zip(values, self.positive,
                                                                   strict=True)]

    def cotangents(self, batch: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.normal(size=(batch, *v.shape)) for v in self.variables]


def l1_problem() -> Case:
    """The README's problem: min ½‖Ax − b‖₁ s.t. x ≥ 0, with A (3, 2) and b (3,)."""
    x, A, b = cp.Variable(2), cp.Parameter((3, 2)), cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1)), [x >= 0])
    return Case(problem, [A, b], [x], (False, False))


def qp_problem(n: int = 10, m: int = 15) -> Case:
    """min ½ xᵀPx + qᵀx s.t. Gx ≤ h, with P, G fixed and q (n,), h (m,) > 0 the parameters."""
    rng = np.random.default_rng(0)
    L = rng.normal(size=(n, n)) / math.sqrt(n)
    P, G = L @ L.T + 0.1 * np.eye(n), rng.normal(size=(m, n))
    x, q, h = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), [G @ x <= h])
    return Case(problem, [q, h], [x], (False, True))


PROBLEMS = {"l1 (README, n=2)": l1_problem, "qp n=10 m=15": qp_problem}


# -- the three ways -------------------------------------------------------------------
def _worker_init() -> None:
    os.environ.update(WORKER_ENV)  # one solve thread per worker process


@contextlib.contextmanager
def executors(workers: int, chunk_size: int | None, use_dask: bool):
    """{mode: executor or None} (and the seconds the Dask cluster took to start); every
    executor shut down on exit."""
    found: dict = {"in-process": None}
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)  # its workers start on first use
    client = cluster = None
    try:
        found["process pool"] = convexlayers.ChunkedExecutor(pool, chunk_size)
        if use_dask:
            from distributed import Client, LocalCluster

            start = time.perf_counter()
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, env=WORKER_ENV,
                                   silence_logs=logging.ERROR)
            client = Client(cluster)
            found["dask"] = convexlayers.ChunkedExecutor(client.get_executor(), chunk_size)
            found["dask cluster start"] = time.perf_counter() - start
        yield found
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        pool.shutdown(cancel_futures=True)


# -- timing ---------------------------------------------------------------------------
def fwd_bwd(layer: CvxpyLayer, values: list[np.ndarray], cotangents: list[np.ndarray]):
    """One forward + backward: (forward s, backward s, outputs, gradients)."""
    leaves = [torch.tensor(v, requires_grad=True) for v in values]
    t0 = time.perf_counter()
    outputs = layer(*leaves)
    t1 = time.perf_counter()
    loss = sum((o * torch.from_numpy(c)).sum() for o, c in zip(outputs, cotangents,
                                                              strict=True))
    loss.backward()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, [o.detach() for o in outputs], [leaf.grad for leaf in leaves]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def measure(layer: CvxpyLayer, case: Case, modes: dict, batch: int, args) -> dict:
    """Interleaved rounds of every mode on one batch; medians and agreement."""
    values, cotangents = case.values(batch, seed=batch), case.cotangents(batch, seed=batch + 1)
    if batch <= 4_096:  # warm-up (the executors were warmed up once already)
        for executor in modes.values():
            layer.executor = executor
            fwd_bwd(layer, values, cotangents)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    first: dict[str, tuple] = {}
    start = time.perf_counter()
    for rounds in range(1, args.max_rounds + 1):
        for name, executor in modes.items():
            layer.executor = executor
            f, b, out, grads = fwd_bwd(layer, values, cotangents)
            times[name].append((f, b))
            first.setdefault(name, (out, grads))
        spent = min(sum(f + b for f, b in t) for t in times.values())
        elapsed = time.perf_counter() - start
        if rounds >= args.min_rounds and spent >= args.min_time:
            break
        if elapsed * (rounds + 1) / rounds > args.budget:
            break
    layer.executor = None
    return _row(batch, modes, times, first)


def _row(batch: int, modes: dict, times: dict, first: dict) -> dict:
    ref_out, ref_grads = first["in-process"]
    row: dict = {"batch": batch, "rounds": len(times["in-process"])}
    chunked = modes.get("process pool")
    row["chunks"] = len(chunked.bounds(batch)) if chunked is not None else 1
    for name in modes:
        row[name] = {
            "fwd_s": statistics.median(f for f, _ in times[name]),
            "bwd_s": statistics.median(b for _, b in times[name]),
            "total_s": statistics.median(f + b for f, b in times[name]),
        }
        if name != "in-process":
            out, grads = first[name]
            row[name]["speedup"] = row["in-process"]["total_s"] / row[name]["total_s"]
            row[name]["fwd_speedup"] = row["in-process"]["fwd_s"] / row[name]["fwd_s"]
            row[name]["max_diff_solution"] = _max_diff(out, ref_out)
            row[name]["max_diff_gradient"] = _max_diff(grads, ref_grads)
    return row


def crossover(rows: list[dict], mode: str) -> int | None:
    """Smallest batch from which on ``mode`` beats in-process at every larger batch."""
    best = None
    for row in sorted(rows, key=lambda r: -r["batch"]):
        if mode not in row or row[mode]["speedup"] <= 1.0:
            break
        best = row["batch"]
    return best


def run_problem(name: str, modes: dict, args) -> dict:
    """Every batch size of one problem; its rows and crossovers."""
    case = PROBLEMS[name]()
    layer = CvxpyLayer(case.problem, parameters=case.params, variables=case.variables,
                       solver="CLARABEL")
    rows = []
    for batch in args.batches:
        row = measure(layer, case, modes, batch, args)
        rows.append(row)
        print(format_row(name, row, modes), flush=True)
    return {"problem": name, "rows": rows,
            "crossover": {m: crossover(rows, m) for m in modes if m != "in-process"}}


# -- report ---------------------------------------------------------------------------
HEADER = ("| problem | batch | chunks | in-process (s) | pool (s) | pool speed-up | "
          "dask (s) | dask speed-up | max Δ solution | max Δ gradient |")


def format_row(problem: str, row: dict, modes: dict) -> str:
    cells = [problem, f"{row['batch']:,}", str(row["chunks"]),
             f"{row['in-process']['total_s']:.3f}"]
    diffs = []
    for mode in ("process pool", "dask"):
        if mode in modes:
            r = row[mode]
            cells += [f"{r['total_s']:.3f}", f"{r['speedup']:.2f}x"]
            diffs.append((r["max_diff_solution"], r["max_diff_gradient"]))
        else:
            cells += ["—", "—"]
    cells += [f"{max(d[0] for d in diffs):.1e}", f"{max(d[1] for d in diffs):.1e}"]
    return "| " + " | ".join(cells) + " |"


def warm_executors(modes: dict) -> dict[str, float]:
    """Start every executor's workers and load the library there: seconds each took."""
    case = l1_problem()
    layer = CvxpyLayer(case.problem, parameters=case.params, variables=case.variables,
                       solver="CLARABEL")
    values = case.values(4 * 128, seed=0)  # several chunks: every worker gets one
    startup = {}
    for name, executor in modes.items():
        layer.executor = executor
        t0 = time.perf_counter()
        layer(*(torch.tensor(v) for v in values))
        startup[name] = time.perf_counter() - t0
    return startup


def write_results(results: list[dict], info: dict, mode: str) -> str:
    """JSON, Markdown and PNG into benchmarks/results/; returns the Markdown."""
    from report import machine, source_fingerprint

    info = {**info, "machine": machine(), "convexlayers_source_sha256": source_fingerprint()}
    lines = [f"# convexlayers: executors vs in-process ({mode})", "",
             f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; load "
             f"average at start / end: {info['loadavg_at_start']} / "
             f"{info['machine']['loadavg_at_end']}. Start-up (workers, first call; s): "
             + ", ".join(f"{k} {v:.2f}" for k, v in info["startup_s"].items()) + ".",
             f"Settings: {info['settings']}.", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()), "",
             "Median forward + backward time of the whole batch; speed-up = in-process "
             "time / executor time (> 1: the executor is faster).", "", HEADER,
             "|" + "---|" * 10]
    for res in results:
        lines += [format_row(res["problem"], row, info["modes"]) for row in res["rows"]]
    lines += ["", "Crossover (smallest batch from which on the executor wins):", ""]
    lines += [f"- {res['problem']}, {m}: {c if c is None else f'{c:,}'}"
              for res in results for m, c in res["crossover"].items()]
    text = "\n".join(lines) + "\n"
    latest = save_outputs(OUT, "distributed-", mode, {**info, "results": results}, text)
    plot(results, latest + ".png")
    print(f"wrote {latest}.{{json,md,png}}")
    return text


def plot(results: list[dict], path: str) -> None:
    """Time per element and speed-up against the batch size, one line per problem and way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"in-process": "-", "process pool": "--", "dask": ":"}
    for k, res in enumerate(results):
        color = f"C{k}"
        batches = [r["batch"] for r in res["rows"]]
        for mode, style in styles.items():
            if mode not in res["rows"][0]:
                continue
            per = [1e3 * r[mode]["total_s"] / r["batch"] for r in res["rows"]]
            left.plot(batches, per, style, marker="o", color=color,
                      label=f"{res['problem']}: {mode}")
            if mode != "in-process":
                right.plot(batches, [r[mode]["speedup"] for r in res["rows"]], style,
                           marker="o", color=color, label=f"{res['problem']}: {mode}")
                if res["crossover"].get(mode):
                    right.axvline(res["crossover"][mode], color=color, ls=style, lw=0.6)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(batches, [f"{b:,}" for b in batches], fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    for axis in (left.yaxis,):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
    left.set(yscale="log", xlabel="batch size",
             ylabel="forward + backward time per element (ms)",
             title="Time per problem (2 workers vs 2 threads in-process)")
    right.axhline(1.0, color="black", lw=0.8)
    right.set(xlabel="batch size", ylabel="in-process time / executor time",
              title="Speed-up of the executor (> 1: it wins; vertical: crossover)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("convexlayers", "torch", "cvxpy", "numpy", "scipy", "clarabel", "dask",
                 "distributed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batches up to 4,096 (< 2 minutes)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of each executor")
    ap.add_argument("--chunk-size", type=int, default=None, help="elements per task")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask cluster")
    ap.add_argument("--only", default="", help="problems whose name contains this")
    args = ap.parse_args(argv)
    args.batches = QUICK_BATCHES if args.quick else FULL_BATCHES
    args.min_rounds, args.max_rounds = 3, 15
    args.min_time = 0.5 if args.quick else 2.0
    args.budget = 6.0 if args.quick else 60.0  # seconds per batch size, all ways together
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    mode = "quick" if args.quick else "full"
    info = {"mode": mode, "loadavg_at_start": tuple(round(x, 2) for x in os.getloadavg()),
            "versions": versions(), "batches": args.batches,
            "settings": {"workers": args.workers, "chunk_size": args.chunk_size or "default",
                         "in-process solve threads": convexlayers_threads(),
                         "worker env": WORKER_ENV,
                         "BLAS threads": os.environ["OPENBLAS_NUM_THREADS"],
                         "rounds": (args.min_rounds, args.max_rounds),
                         "budget_s": args.budget}}
    use_dask = not args.no_dask and _has_dask()
    print(HEADER + "\n|" + "---|" * 10, flush=True)
    with executors(args.workers, args.chunk_size, use_dask) as modes:
        cluster_start = modes.pop("dask cluster start", None)
        info["startup_s"] = warm_executors(modes)
        if cluster_start is not None:
            info["startup_s"]["dask"] += cluster_start
        info["modes"] = list(modes)
        results = [run_problem(name, modes, args) for name in PROBLEMS if args.only in name]
    text = write_results(results, info, mode)
    print("\n" + text[text.index("Crossover"):])
    return 0


def convexlayers_threads() -> int:
    from convexlayers._core._parallel import num_threads

    return num_threads()


def _has_dask() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("distributed (Dask) is not installed: skipping the Dask cluster "
              "(pip install -e '.[dask]')", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
