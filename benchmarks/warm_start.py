"""Warm starts on a sequence of slowly varying problems: an MPC rolled forward in time.

    python benchmarks/warm_start.py            # 3 step lengths, 60 steps (about 1 minute)
    python benchmarks/warm_start.py --quick    # 1 step length, 20 steps (under 1 minute)

A planar double integrator (state: position and velocity, input: force, ‖u‖∞ ≤ 1) is
steered to the origin by an MPC of horizon H, the initial state x₀ its only parameter,
for a batch of trajectories kicked by random disturbances (standard deviation
``--noise`` · √dt per step), which keep the loop busy. At each step two PyTorch layers
solve the same states: one cold, one with ``warm_start=True`` (which starts from that
layer's previous solution, element by element); the closed loop follows the warm layer's
first input. The shorter the time step, the less x₀ moves between solves.

Reported for SCS and solver="NATIVE" (and Clarabel, which ignores warm starts, as a
reference): mean iterations per solve (``layer.info``), the wall-clock time of a layer
call and the solver's own time (``info.solve_time``), and the max difference between the
cold and the warm outputs (the plans u). BLAS runs on one
thread (set OPENBLAS_NUM_THREADS to override). Results (JSON, Markdown, PNG) go
to benchmarks/results/warm-start-*. Nothing here asserts on times.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cvxpy as cp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from convexlayers.torch import CvxpyLayer  # noqa: E402
from report import save_outputs  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SOLVERS = ("SCS", "NATIVE", "CLARABEL")  # CLARABEL: no warm start, a reference
N_X, N_U = 4, 2


def dynamics(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """x⁺ = A x + B u for state (px, py, vx, vy) and force (fx, fy)."""
    eye, zero = np.eye(2), np.zeros((2, 2))
    return np.block([[eye, dt * eye], [zero, eye]]), np.vstack([0.5 * dt**2 * eye, dt * eye])


def mpc_layer(dt: float, horizon: int, solver: str) -> CvxpyLayer:
    """Plan u (H, 2) from x₀: Σ ‖x_t‖² + 0.1 ‖u_t‖² s.t. dynamics, ‖u_t‖∞ ≤ 1."""
    A, B = dynamics(dt)
    x, u, x0 = cp.Variable((horizon + 1, N_X)), cp.Variable((horizon, N_U)), cp.Parameter(N_X)
    cost = cp.sum_squares(x) + 0.1 * cp.sum_squares(u)
    constraints = [x[0] == x0, cp.abs(u) <= 1, x[1:] == x[:-1] @ A.T + u @ B.T]
    problem = cp.Problem(cp.Minimize(cost), constraints)
    return CvxpyLayer(problem, parameters=[x0], variables=[u], solver=solver)


def initial_states(batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.hstack([rng.normal(0, 3, (batch, 2)), rng.normal(0, 1, (batch, 2))])


def timed(layer: CvxpyLayer, x: torch.Tensor, warm: bool):
    t0 = time.perf_counter()
    (u,) = layer(x, warm_start=warm)
    wall = time.perf_counter() - t0
    info = layer.info
    return u, wall, float(info.iterations.mean()), float(info.solve_time.sum())


def closed_loop(solver: str, dt: float, args) -> dict:
    """Cold and warm layers in lockstep along the warm layer's closed loop."""
    cold, warm = mpc_layer(dt, args.horizon, solver), mpc_layer(dt, args.horizon, solver)
    A, B = (torch.tensor(m) for m in dynamics(dt))
    x = torch.tensor(initial_states(args.batch, seed=0))
    size = (args.steps, args.batch, N_X)
    noise = np.random.default_rng(1).normal(0, args.noise * np.sqrt(dt), size)
    cold(x), warm(x)  # first calls (imports, lazy set-up) untimed; step 0 is cold for both
    rec = {k: [] for k in ("iters_cold", "iters_warm", "wall_cold", "wall_warm",
                           "solver_cold", "solver_warm", "diff")}
    for step in range(args.steps):
        order = (False, True) if step % 2 else (True, False)  # alternate who goes first
        out = {}
        for is_warm in order:
            out[is_warm] = timed(warm if is_warm else cold, x, is_warm and step > 0)
        for key, is_warm in (("cold", False), ("warm", True)):
            _, wall, iters, solver_time = out[is_warm]
            rec[f"iters_{key}"].append(iters)
            rec[f"wall_{key}"].append(wall)
            rec[f"solver_{key}"].append(solver_time)
        rec["diff"].append(float((out[True][0] - out[False][0]).abs().max()))
        u = out[True][0][:, 0]
        x = x @ A.T + u @ B.T + torch.from_numpy(noise[step])
    return summarize(solver, dt, rec)


def summarize(solver: str, dt: float, rec: dict) -> dict:
    def saved(key: str) -> float:
        return 1.0 - np.sum(rec[f"{key}_warm"]) / np.sum(rec[f"{key}_cold"])

    return {
        "solver": solver, "dt": dt,
        "iters_cold": float(np.mean(rec["iters_cold"])),
        "iters_warm": float(np.mean(rec["iters_warm"])),
        "iters_saved": saved("iters"),
        "ms_per_call_cold": 1e3 * float(np.median(rec["wall_cold"])),
        "ms_per_call_warm": 1e3 * float(np.median(rec["wall_warm"])),
        "wall_saved": saved("wall"),
        "solver_saved": saved("solver"),
        "max_diff": float(np.max(rec["diff"])),
        "per_step": rec,
    }


HEADER = ("| solver | dt | iterations cold | warm | saved | ms per call cold | warm | saved "
          "(total) | solver time saved | max abs Δu cold vs warm |")


def format_row(r: dict) -> str:
    return (f"| {r['solver']} | {r['dt']:g} | {r['iters_cold']:.1f} | {r['iters_warm']:.1f} | "
            f"{100 * r['iters_saved']:.0f}% | {r['ms_per_call_cold']:.1f} | "
            f"{r['ms_per_call_warm']:.1f} | {100 * r['wall_saved']:.0f}% | "
            f"{100 * r['solver_saved']:.0f}% | {r['max_diff']:.1e} |")


def plot(rows: list[dict], path: str) -> None:
    """Iterations per step, cold and warm, and the savings per solver and step length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    dts = sorted({r["dt"] for r in rows})
    shown = dts[len(dts) // 2]
    for k, r in enumerate(x for x in rows if x["dt"] == shown):
        left.plot(r["per_step"]["iters_cold"], "-", color=f"C{k}", label=f"{r['solver']} cold")
        left.plot(r["per_step"]["iters_warm"], "--", color=f"C{k}",
                  label=f"{r['solver']} warm_start=True")
    left.set(yscale="log", xlabel="MPC step", ylabel="mean iterations per solve",
             title=f"Iterations along the closed loop (dt = {shown:g})")
    left.legend(fontsize=8)
    width = 0.8 / (2 * len(SOLVERS))
    for k, solver in enumerate(SOLVERS):
        mine = {r["dt"]: r for r in rows if r["solver"] == solver}
        for j, (key, label) in enumerate((("iters_saved", "iterations"),
                                          ("wall_saved", "time per call"))):
            xs = [i + (2 * k + j) * width for i in range(len(dts))]
            right.bar(xs, [100 * mine[dt][key] for dt in dts], width, color=f"C{k}",
                      alpha=1.0 if j == 0 else 0.5, label=f"{solver}: {label}")
    right.axhline(0, color="black", lw=0.8)
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(dts))],
                     [f"dt = {dt:g}" for dt in dts])
    right.set(ylabel="saved by warm_start=True (%)",
              title="Savings (shorter steps: parameters drift less)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(rows: list[dict], args) -> None:
    from report import machine, source_fingerprint

    mode = "quick" if args.quick else "full"
    info = {"mode": mode, "machine": machine(), "loadavg_at_start": args.loadavg,
            "convexlayers_source_sha256": source_fingerprint(),
            "settings": {"batch": args.batch, "steps": args.steps, "horizon": args.horizon,
                         "noise": args.noise, "dts": args.dts,
                         "BLAS threads": os.environ["OPENBLAS_NUM_THREADS"]}}
    lines = [f"# convexlayers: warm starts along an MPC closed loop ({mode})", "",
             f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; load "
             f"average at start / end: {args.loadavg} / {info['machine']['loadavg_at_end']}.",
             f"Settings: {info['settings']}; each solver at its default tolerance.", "",
             "Iterations: mean per solve over the steps and the batch. Time: median "
             "wall-clock ms per layer call (the batch); 'saved' compares the sums over "
             "the steps.", "", HEADER, "|" + "---|" * 10, *(format_row(r) for r in rows)]
    text = "\n".join(lines) + "\n"
    latest = save_outputs(OUT, "warm-start-", mode, {**info, "rows": rows}, text)
    plot(rows, latest + ".png")
    print(f"wrote {latest}.{{json,md,png}}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one step length, 20 steps")
    ap.add_argument("--batch", type=int, default=16, help="trajectories solved together")
    ap.add_argument("--horizon", type=int, default=15)
    ap.add_argument("--noise", type=float, default=0.5,
                    help="disturbance: standard deviation per unit of time, times sqrt(dt)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    args.steps = 20 if args.quick else 60
    args.dts = (0.1,) if args.quick else (0.02, 0.1, 0.3)
    args.loadavg = tuple(round(x, 2) for x in os.getloadavg())
    print(HEADER + "\n|" + "---|" * 10, flush=True)
    rows = []
    for dt in args.dts:
        for solver in SOLVERS:
            rows.append(closed_loop(solver, dt, args))
            print(format_row(rows[-1]), flush=True)
    write_results(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
