"""Tuning a Markowitz portfolio through the optimizer (PyTorch).

Every month a long-only portfolio of 12 assets is chosen from the last 36 months of
returns, by the Markowitz problem

    w*(μ, S) = argmax_w  μᵀw − ‖S w‖²   s.t.  1ᵀw = 1,  w ≥ 0,

with S = γ^½ · Σ̂^½ (risk aversion γ, sample covariance Σ̂) and adjusted mean returns
μ = α μ̂ + (1 − α) mean(μ̂) + β: the sample means μ̂ shrunk by α toward their average,
plus a learned per-asset offset β. Sample means of 36 months are mostly noise, so the
textbook choice (α = 1, β = 0, γ = 1) concentrates on the luckiest assets. The
parameters α, β and γ are learned by maximizing the realized Sharpe ratio of the next
6 months, over rolling windows of simulated history, differentiating through the
optimizer. The Sharpe ratio is then measured on a later, held-out stretch of history.
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

N_ASSETS, LOOKBACK, HOLD = 12, 36, 6


def markowitz() -> CvxpyLayer:
    w = cp.Variable(N_ASSETS)
    mu = cp.Parameter(N_ASSETS)
    S = cp.Parameter((N_ASSETS, N_ASSETS))
    problem = cp.Problem(cp.Maximize(mu @ w - cp.sum_squares(S @ w)), [cp.sum(w) == 1, w >= 0])
    return CvxpyLayer(problem, parameters=[mu, S], variables=[w])


def simulate(months: int, rng: np.random.Generator) -> np.ndarray:
    """Monthly returns of a 3-factor model with small true mean differences."""
    mu = rng.uniform(0.004, 0.010, N_ASSETS)
    loadings = rng.normal(0, 0.03, (N_ASSETS, 3))
    idio = rng.uniform(0.03, 0.08, N_ASSETS)
    factors = rng.standard_normal((months, 3))
    return mu + factors @ loadings.T + idio * rng.standard_normal((months, N_ASSETS))


def windows(returns: np.ndarray, starts) -> tuple[torch.Tensor, ...]:
    """Per window: sample mean, Cholesky factor of the sample covariance, next returns."""
    mus, chols, future = [], [], []
    for s in starts:
        past = returns[s:s + LOOKBACK]
        cov = np.cov(past.T) + 1e-6 * np.eye(N_ASSETS)
        mus.append(past.mean(0))
        chols.append(np.linalg.cholesky(cov).T)
        future.append(returns[s + LOOKBACK:s + LOOKBACK + HOLD])
    return tuple(torch.tensor(np.array(a)) for a in (mus, chols, future))


class Policy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logit_alpha = torch.nn.Parameter(torch.tensor(4.0, dtype=torch.float64))
        self.log_gamma = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.beta = torch.nn.Parameter(torch.zeros(N_ASSETS, dtype=torch.float64))
        self.layer = markowitz()

    def forward(self, mu_hat, chol):
        alpha = torch.sigmoid(self.logit_alpha)
        mu = alpha * mu_hat + (1 - alpha) * mu_hat.mean(1, keepdim=True) + self.beta / 100
        S = torch.exp(self.log_gamma / 2) * chol
        return self.layer(mu, S)[0]


def sharpe(weights, future) -> torch.Tensor:
    """Annualized Sharpe ratio of all realized monthly portfolio returns."""
    realized = torch.einsum("bn,btn->bt", weights, future).reshape(-1)
    return realized.mean() / realized.std() * np.sqrt(12)


def plot(history, sharpes, weights, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(history, color="tab:blue")
    axes[0].set(xlabel="iteration", ylabel="Sharpe ratio (training windows)",
                title="Training through the Markowitz problem")
    names = list(sharpes)
    axes[1].bar(names, [sharpes[k] for k in names], color=["tab:gray", "tab:red", "tab:green"])
    for i, k in enumerate(names):
        axes[1].text(i, sharpes[k], f"{sharpes[k]:.2f}", ha="center", va="bottom")
    axes[1].set(ylabel="annualized Sharpe ratio", title="Held-out history")
    for (name, w), color in zip(weights.items(), ["tab:red", "tab:green"], strict=True):
        axes[2].plot(np.sort(w, axis=1)[:, ::-1].mean(0), "o-", color=color, label=name)
    axes[2].set(xlabel="asset rank by weight", ylabel="mean weight",
                title="Concentration of the portfolios")
    axes[2].legend(fontsize=8)
    return save(fig, out, "portfolio")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    returns = simulate(1200, rng)
    n_windows = 24 if quick else 96
    train = windows(returns, rng.integers(0, 600 - LOOKBACK - HOLD, n_windows))
    test = windows(returns, np.arange(600, 1200 - LOOKBACK - HOLD, HOLD))
    policy = Policy()
    opt = torch.optim.Adam(policy.parameters(), lr=0.1)
    history = []
    for _ in progress(range(10 if quick else 60), desc="tune α, β, γ"):
        loss = -sharpe(policy(*train[:2]), train[2])
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(-loss.item())
    with torch.no_grad():
        w_learned = policy(*test[:2])
        baseline = Policy()
        w_textbook = baseline(*test[:2])
    equal = torch.full_like(w_learned, 1 / N_ASSETS)
    sharpes = {"equal weights": sharpe(equal, test[2]).item(),
               "textbook Markowitz": sharpe(w_textbook, test[2]).item(),
               "tuned Markowitz": sharpe(w_learned, test[2]).item()}
    metrics = {
        **{f"held-out Sharpe, {k}": v for k, v in sharpes.items()},
        "alpha": torch.sigmoid(policy.logit_alpha).item(),
        "gamma": torch.exp(policy.log_gamma).item(),
        "first training Sharpe": history[0],
        "final training Sharpe": history[-1],
    }
    path = plot(history, sharpes, {"textbook": w_textbook.numpy(),
                                   "tuned": w_learned.numpy()}, out)
    report(f"Markowitz tuning ({len(history)} iterations, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
