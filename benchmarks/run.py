"""Benchmark convexlayers' PyTorch layer against its peers, side by side.

    python benchmarks/run.py            # full run
    python benchmarks/run.py --quick    # small sizes, few repeats (< ~2 minutes)

For each workload and library: construction time (once), then the median wall-clock
time of a forward pass (no grad) and of forward + backward, after one warm-up call,
and the max abs difference of solutions and gradients vs convexlayers. Ratios are
peer time / our time (> 1: we are faster). Results go to benchmarks/results/.
Nothing here asserts on times.
"""

from __future__ import annotations

import argparse
import os
import sys


def _limit_threads(n: int) -> None:
    """Give every library ``n`` cores: thread-count settings, and CPU affinity for the
    thread pools that ignore them (convexlayers sizes its batch pool by os.cpu_count())."""
    # Must happen before NumPy / torch / Rayon start their pools.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "RAYON_NUM_THREADS"):
        os.environ[var] = str(n)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    ap.add_argument("--threads", type=int, default=1, help="threads for every library")
    ap.add_argument("--repeats", type=int, default=None, help="minimum timed repeats")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per measurement before repeats stop (min 1 repeat)")
    ap.add_argument("--only", default="", help="run workloads whose name contains this")
    ap.add_argument("--libs", default="", help="comma-separated library names (default: all)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    args.loadavg_start = tuple(round(x, 2) for x in os.getloadavg())
    _limit_threads(args.threads)
    import torch

    from harness import measure_workload, warm_up
    from libraries import LIBRARIES
    from report import write_results
    from workloads import suite

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 7)
    budget = args.budget or (2.0 if args.quick else 8.0)
    min_time = 0.2 if args.quick else 1.0
    wanted = {s.strip() for s in args.libs.split(",") if s.strip()}
    libs = [lib for lib in LIBRARIES if not wanted or lib.name in wanted or lib is LIBRARIES[0]]
    work = [w for w in suite(args.quick) if args.only in w.name]
    warm_up(libs, args.threads)
    rows = []
    for w in work:
        rows.extend(measure_workload(w, libs, args.threads, repeats, budget, min_time))
    write_results(rows, libs, args, repeats, budget, min_time)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
