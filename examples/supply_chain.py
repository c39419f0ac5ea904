"""Planning warehouse capacities through the shipping problem (PyTorch).

Four warehouses serve twelve stores. Capacities K must be bought now, at a price k per
unit and warehouse; demand d is only known later, when goods are shipped by the
allocation problem

    x*(K, d) = argmax_x  Σᵢⱼ (pⱼ − cᵢⱼ) xᵢⱼ − (γ/2)‖x‖²
               s.t.     Σⱼ xᵢⱼ ≤ Kᵢ  (capacity),  Σᵢ xᵢⱼ ≤ dⱼ  (demand),  x ≥ 0,

with pⱼ the price at store j, cᵢⱼ the shipping cost (proportional to distance) and a
small γ that makes the allocation unique. The profit is Σ (p − c)·x* − kᵀK, and its
expectation over demand is what K should maximize: a two-stage stochastic program.

The classical shortcut plans for the average demand: solve the problem once with d =
E[d] and buy the capacities that plan uses. Here K is instead learned by stochastic
gradient ascent on the realized profit of sampled demands, differentiating through the
allocation (the layer's gradient with respect to K is the shadow price of capacity).
Both are scored on held-out demand scenarios and compared with the optimum of the
sample-average problem over the same training scenarios, solved as one large LP.
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

N_WH, N_ST, GAMMA = 4, 12, 1e-3


def network(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Locations, prices, shipping and capacity costs, and a demand model."""
    wh = rng.uniform(0, 1, (N_WH, 2))
    st = rng.uniform(0, 1, (N_ST, 2))
    dist = np.linalg.norm(wh[:, None] - st[None], axis=2)
    return {"wh": wh, "st": st, "margin": rng.uniform(3.0, 5.0, N_ST)[None] - 2.5 * dist,
            "k": rng.uniform(1.2, 2.0, N_WH), "mean": rng.uniform(5, 15, N_ST)}


def demand(net, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lognormal demand around the store means: a common factor (the economy) and a
    store-level one, so that stores are short or flush together."""
    common = rng.standard_normal((n, 1))
    own = rng.standard_normal((n, N_ST))
    z = 0.4 * common + 0.4 * own
    return net["mean"] * np.exp(z - 0.5 * (0.4**2 + 0.4**2))


def allocation_layer(margin: np.ndarray) -> CvxpyLayer:
    x = cp.Variable((N_WH, N_ST), nonneg=True)
    K = cp.Parameter(N_WH, nonneg=True)
    d = cp.Parameter(N_ST, nonneg=True)
    objective = cp.Maximize(cp.sum(cp.multiply(margin, x)) - GAMMA / 2 * cp.sum_squares(x))
    problem = cp.Problem(objective, [cp.sum(x, axis=1) <= K, cp.sum(x, axis=0) <= d])
    return CvxpyLayer(problem, parameters=[K, d], variables=[x])


def profit(layer, net, K: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Realized profit per demand scenario: margin of what is shipped, minus capacity cost."""
    (x,) = layer(K, d)
    margin = torch.tensor(net["margin"])
    return (margin * x).sum((1, 2)) - (torch.tensor(net["k"]) * K).sum()


def plan_for_mean(net) -> np.ndarray:
    """The deterministic plan: the capacities that are optimal if demand is its mean."""
    x = cp.Variable((N_WH, N_ST), nonneg=True)
    profit_ = cp.sum(cp.multiply(net["margin"], x)) - net["k"] @ cp.sum(x, axis=1)
    cp.Problem(cp.Maximize(profit_), [cp.sum(x, axis=0) <= net["mean"]]).solve(solver="CLARABEL")
    K = x.value.sum(1)
    return np.where(K > 1e-4, K, 0.0)  # an exact 0 where the plan leaves a warehouse out


def sample_average_optimum(net, d: np.ndarray) -> np.ndarray:
    """The reference: K maximizing the mean profit over the scenarios d, as one LP."""
    n = len(d)
    K = cp.Variable(N_WH, nonneg=True)
    x = cp.Variable((n * N_WH, N_ST), nonneg=True)
    blocks = [x[s * N_WH:(s + 1) * N_WH] for s in range(n)]
    constraints = []
    revenue = 0
    for s, xs in enumerate(blocks):
        constraints += [cp.sum(xs, axis=1) <= K, cp.sum(xs, axis=0) <= d[s]]
        revenue += cp.sum(cp.multiply(net["margin"], xs))
    cp.Problem(cp.Maximize(revenue / n - net["k"] @ K), constraints).solve(solver="CLARABEL")
    return K.value


def plot(net, history, scores, plans, flows, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    it, values = zip(*history, strict=True)
    axes[0].plot(it, values, "o-", color="tab:green", ms=3, label="learned K")
    for key, color in [("plan for mean demand", "tab:red"), ("sample-average optimum", "k")]:
        axes[0].axhline(scores[key], color=color, ls="--", label=key)
    axes[0].set(xlabel="iteration", ylabel="mean profit on held-out demand",
                title="Learning capacities through the allocation")
    axes[0].legend(fontsize=8)
    width = 0.27
    for k, ((name, K), color) in enumerate(zip(plans.items(),
                                               ["tab:red", "tab:green", "k"], strict=True)):
        axes[1].bar(np.arange(N_WH) + (k - 1) * width, K, width, color=color, label=name)
    axes[1].set(xticks=range(N_WH), xticklabels=[f"W{i + 1}\nk={c:.2f}"
                                                 for i, c in enumerate(net["k"])],
                ylabel="capacity", title="Capacities (k: price per unit)")
    axes[1].legend(fontsize=8)
    ax = axes[2]
    scale = 6 / flows.max()
    for i in range(N_WH):
        for j in range(N_ST):
            if flows[i, j] > 0.05:
                ax.plot(*zip(net["wh"][i], net["st"][j], strict=True), color="tab:blue",
                        lw=scale * flows[i, j], alpha=0.5, solid_capstyle="round")
    ax.scatter(*net["st"].T, s=12 * net["mean"], color="tab:orange", zorder=3,
               label="store (size: mean demand)")
    ax.scatter(*net["wh"].T, s=200, marker="s", color="tab:green", zorder=3,
               label="warehouse")
    for i, (px, py) in enumerate(net["wh"]):
        ax.text(px, py, f"W{i + 1}", ha="center", va="center", fontsize=7, color="w", zorder=4)
    ax.set(aspect="equal", xticks=[], yticks=[],
           title="Mean shipments, learned K (width: volume)")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, -0.2), ncol=2)
    return save(fig, out, "supply_chain")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    net = network(rng)
    iters, batch, n_test = (15, 32, 200) if quick else (100, 64, 500)
    train_d = demand(net, iters * batch, rng)
    test_d = torch.tensor(demand(net, n_test, rng))
    layer = allocation_layer(net["margin"])
    K_mean = plan_for_mean(net)
    K = torch.tensor(K_mean, requires_grad=True)
    opt = torch.optim.Adam([K], lr=0.5)
    history = []
    for t in progress(range(iters), desc="learn K"):
        if t % max(1, iters // 15) == 0:
            with torch.no_grad():
                history.append((t, profit(layer, net, K, test_d).mean().item()))
        d = torch.tensor(train_d[t * batch:(t + 1) * batch])
        loss = -profit(layer, net, K, d).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # projected: capacities stay ≥ 0, and a tiny one is 0
            K.masked_fill_(K < 1e-3, 0.0)
    K_learned = K.detach()
    K_saa = sample_average_optimum(net, train_d[:200 if quick else 600])
    plans = {"plan for mean demand": torch.tensor(K_mean), "learned": K_learned,
             "sample-average optimum": torch.tensor(K_saa)}  # over the first 600 (quick: 200)
    with torch.no_grad():
        scores = {name: profit(layer, net, K, test_d).mean().item() for name, K in plans.items()}
        history.append((iters, scores["learned"]))
        flows = layer(K_learned, test_d)[0].mean(0).numpy()
    metrics = {
        **{f"held-out profit, {k}": v for k, v in scores.items()},
        "gap to optimum closed": ((scores["learned"] - scores["plan for mean demand"])
                                  / (scores["sample-average optimum"]
                                     - scores["plan for mean demand"])),
        "total capacity, plan for mean demand": float(K_mean.sum()),
        "total capacity, learned": float(K_learned.sum()),
        "total capacity, sample-average optimum": float(K_saa.sum()),
    }
    path = plot(net, history, scores, {k: v.numpy() for k, v in plans.items()}, flows, out)
    report(f"Supply-chain capacity planning ({iters} iterations of {batch} scenarios, "
           f"figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
