"""Profile convexlayers' layer on one benchmark workload, by phase.

    python benchmarks/profile_ours.py "qp_dense n=10 B=32" [--full] [--calls 20] [--top 25]

Runs forward (no grad) and forward + backward under cProfile after a warm-up and
prints, per call, where the time goes: solver, data mapping, derivative, etc. The batch
is solved serially here (cProfile follows one thread), on one thread of BLAS.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats

# Phases: cumulative time of these functions (file suffix, function name) per call.
# They nest (e.g. "derivative: J solve" is inside "backward (vjp)"), so rows do not add up.
PHASES = [
    ("forward: whole solve_op", "torch/_ops.py", "solve_op"),
    ("  SolutionMap.solve", "_solution_map.py", "solve"),
    ("    validate + flatten θ", "_solution_map.py", "_theta"),
    ("    check_values", "_values.py", "check_values"),
    ("    data map θ -> (P,q,A,b)", "_data.py", "apply"),
    ("    build ConeProgram (scipy CSC)", "_data.py", "program"),
    ("    backend, per element", "solvers/_clarabel.py", "__call__"),
    ("      check_program", "solvers/_base.py", "check_program"),
    ("      clarabel .solve() (IPM)", "~", "<method 'solve' of 'builtins.DefaultSolver' objects>"),
    ("    KKT residual", "_refine.py", "normal_residual"),
    ("    outputs_from (R z)", "compile/_program.py", "outputs_from"),
    ("backward: whole solve_vjp_op", "torch/_ops.py", "solve_vjp_op"),
    ("  SolutionMap.vjp", "_solution_map.py", "vjp"),
    ("    SolutionDerivative init (DΠ)", "derivative/_engine.py", "__init__"),
    ("      dual_projection_jacobian", "cones/_product.py", "dual_projection_jacobian"),
    ("    J assembly", "derivative/_engine.py", "_assemble"),
    ("    J solve (LU + checks)", "derivative/_linear.py", "solve"),
    ("      numpy batched LU solve", "derivative/_linear.py", "_batched_lu"),
    ("      sparse LU (splu)", "scipy/sparse/linalg/_dsolve/linsolve.py", "splu"),
    ("    data-map adjoint", "_data.py", "vjp"),
]


def _phase_table(stats: pstats.Stats, calls: int) -> list[str]:
    raw = stats.stats  # type: ignore[attr-defined]
    lines = []
    for label, suffix, name in PHASES:
        # max, not sum: same-named methods nest (AutoLinearSolver.solve -> DenseLU.solve).
        cum = max((v[3] for (f, _, fn), v in raw.items() if fn == name and f.endswith(suffix)),
                  default=0.0)
        lines.append(f"{label:<40s} {1e3 * cum / calls:9.2f} ms")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", help="a workload name, e.g. 'qp_dense n=10 B=32'")
    ap.add_argument("--full", action="store_true", help="look in the full suite")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    from libraries import OURS
    from workloads import dense_qp, suite

    torch.set_num_threads(1)
    # cProfile sees only the calling thread: solve the batch serially so that the
    # solver's time is attributed (a pool of threads would show up as lock waits).
    os.environ["CONVEXLAYERS_NUM_THREADS"] = "1"
    found = [w for w in [*suite(args.full), *suite(not args.full), dense_qp(100, 128)]
             if w.name == args.workload]
    if not found:
        raise SystemExit(f"no workload {args.workload!r}; see workloads.suite()")
    w = found[0]
    call = OURS.make(w, 1)
    values = w.values(0)
    plain = [torch.tensor(v) for v in values]
    leaves = [torch.tensor(v, requires_grad=True) for v in values]

    def fwd():
        with torch.no_grad():
            call(plain, False)

    def both():
        out = call(leaves, True)
        sum(o.sum() for o in out).backward()

    for label, fn in (("forward", fwd), ("forward+backward", both)):
        fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        stats = pstats.Stats(prof)
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"\n=== {w.name}: {label}, {1e3 * total / args.calls:.2f} ms/call under cProfile")
        print("\n".join(_phase_table(stats, args.calls)))
        stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
