"""Learning the rules of 4×4 Sudoku with a QP layer (OptNet, PyTorch).

A 4×4 Sudoku is encoded as 64 numbers z ∈ [0, 1], one per (row, column, digit): the
one-hot encoding of the filled grid. Following Amos and Kolter ("OptNet: differentiable
optimization as a layer in neural networks", 2017, section on Sudoku), the model is a
single quadratic program

    z*(p) = argmin_z  ½ ε ‖z‖² − pᵀz    s.t.  A z = b,  z ≥ 0,

whose linear term p is the puzzle (the one-hot encoding of its given cells, zeros for
the blanks) and whose equality constraints (A, b) are learned. Nothing about Sudoku is
built in: A starts as a random 40 × 64 matrix, and b = A z₀ for a learned z₀ ≥ 0 (so the
QP stays feasible whatever A is). The rules (one digit per cell, each digit once per row,
column and 2×2 box: all linear equalities on z) must be discovered from puzzle–solution
pairs alone, by differentiating the squared error of z* through the QP. A puzzle counts
as solved when the argmax over digits of z* is the solution in all 16 cells; held-out
puzzles are made from solution grids never seen in training.
"""

from __future__ import annotations

import itertools
import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

N_VARS, N_ROWS, EPS = 64, 40, 0.1  # one-hot variables, rows of the learned A, ε
# 4×4 Sudoku has two essentially different grids (the orbits of these two under the
# symmetries below, 96 and 192 grids); together they give all 288.
BASES = np.array([[[0, 1, 2, 3], [2, 3, 0, 1], [1, 0, 3, 2], [3, 2, 1, 0]],
                  [[0, 1, 2, 3], [2, 3, 0, 1], [1, 2, 3, 0], [3, 0, 1, 2]]])


def all_solutions() -> np.ndarray:
    """The 288 valid 4×4 grids, as the images of two base grids under Sudoku's
    symmetries: relabelling digits, swapping rows within a band, swapping bands, the
    same for columns, and transposing."""
    in_band = [[0, 1, 2, 3], [1, 0, 2, 3], [0, 1, 3, 2], [1, 0, 3, 2]]
    bands = [[0, 1, 2, 3], [2, 3, 0, 1]]
    orders = [[b[i] for i in r] for r in in_band for b in bands]
    grids = set()
    for base, digits in itertools.product(BASES, itertools.permutations(range(4))):
        relabelled = np.array(digits)[base]
        for rows, cols, transpose in itertools.product(orders, orders, (False, True)):
            grid = relabelled[np.ix_(rows, cols)]
            grids.add((grid.T if transpose else grid).tobytes())
    out = np.array([np.frombuffer(g, dtype=BASES.dtype).reshape(4, 4) for g in sorted(grids)])
    assert len(out) == 288
    return out


def make_puzzles(grids: np.ndarray, n: int, blanks: int, rng: np.random.Generator):
    """n puzzles with a unique solution: erase cells of a random grid, in random order,
    as long as the solution stays unique, up to ``blanks`` erased cells."""
    solutions = all_solutions()
    puzzles, answers = [], []
    for _ in range(n):
        grid = grids[rng.integers(len(grids))]
        given = np.ones((4, 4), bool)
        for cell in rng.permutation(16):
            if (~given).sum() == blanks:
                break
            given.flat[cell] = False
            consistent = (solutions[:, given] == grid[given]).all(1).sum()
            if consistent > 1:
                given.flat[cell] = True
        puzzles.append(np.where(given, grid, -1))
        answers.append(grid)
    return np.array(puzzles), np.array(answers)


def one_hot(grids: np.ndarray) -> torch.Tensor:
    """(n, 4, 4) digits in 0..3, −1 for a blank → (n, 64): index 16·row + 4·col + digit."""
    eye = np.vstack([np.eye(4), np.zeros(4)])  # row −1: a blank, all zeros
    return torch.tensor(eye[grids].reshape(len(grids), N_VARS))


def qp_layer() -> CvxpyLayer:
    z = cp.Variable(N_VARS)
    A = cp.Parameter((N_ROWS, N_VARS))
    b = cp.Parameter(N_ROWS)
    p = cp.Parameter(N_VARS)
    objective = cp.Minimize(0.5 * EPS * cp.sum_squares(z) - p @ z)
    problem = cp.Problem(objective, [A @ z == b, z >= 0])
    return CvxpyLayer(problem, parameters=[A, b, p], variables=[z])


class OptNetSudoku(torch.nn.Module):
    def __init__(self, gen: torch.Generator):
        super().__init__()
        self.A = torch.nn.Parameter(torch.rand(N_ROWS, N_VARS, generator=gen,
                                               dtype=torch.float64))
        self.z0_raw = torch.nn.Parameter(torch.full((N_VARS,), -1.0, dtype=torch.float64))
        self.layer = qp_layer()

    def forward(self, puzzles: torch.Tensor) -> torch.Tensor:
        z0 = torch.nn.functional.softplus(self.z0_raw)  # a point the QP always admits
        return self.layer(self.A, self.A @ z0, puzzles)[0]


def solved(z: torch.Tensor, answers: np.ndarray) -> np.ndarray:
    """Per puzzle: is the argmax digit right in all 16 cells?"""
    guess = z.detach().reshape(-1, 4, 4, 4).argmax(-1).numpy()
    return (guess == answers).all(axis=(1, 2))


def sudoku_rules() -> tuple[np.ndarray, list[str]]:
    """The true constraints, 64 rows of A_true z = 1: one digit per cell, each digit once
    per row, per column and per box. Not used in training, only to judge the learned A."""
    rows, kinds = [], []
    index = np.arange(N_VARS).reshape(4, 4, 4)  # (row, column, digit)
    groups = {"cell": [index[r, c, :] for r in range(4) for c in range(4)],
              "row": [index[r, :, d] for r in range(4) for d in range(4)],
              "column": [index[:, c, d] for c in range(4) for d in range(4)],
              "box": [index[2 * i:2 * i + 2, 2 * j:2 * j + 2, d].ravel()
                      for i in range(2) for j in range(2) for d in range(4)]}
    for kind, members in groups.items():
        for m in members:
            row = np.zeros(N_VARS)
            row[m] = 1
            rows.append(row)
            kinds.append(kind)
    return np.array(rows), kinds


def outside_row_space(A: np.ndarray, rules: np.ndarray) -> np.ndarray:
    """Per true constraint a: ‖a − P a‖ / ‖a‖, P the projection onto the row space of A
    (0: the learned equalities imply a z = const)."""
    basis = np.linalg.svd(A, full_matrices=False)[2]
    return np.linalg.norm(rules - rules @ basis.T @ basis, axis=1) / np.linalg.norm(rules, axis=1)


def cell_accuracy(z: torch.Tensor, answers: np.ndarray, blanks: np.ndarray) -> float:
    guess = z.detach().reshape(-1, 4, 4, 4).argmax(-1).numpy()
    return float((guess == answers)[blanks].mean())


def plot(losses, accuracy, residuals, puzzle, answer, z_before, z_after, out) -> pathlib.Path:
    fig = plt.figure(figsize=(15, 4.4))
    grid = fig.add_gridspec(1, 4, width_ratios=[1.2, 1.5, 0.75, 0.75])
    ax = fig.add_subplot(grid[0])
    ax.semilogy(losses, color="tab:blue", alpha=0.8, label="training loss")
    ax.set(xlabel="iteration", ylabel="mean squared error of z*",
           title="Training through the QP")
    twin = ax.twinx()
    twin.plot(*zip(*accuracy, strict=True), "o-", color="tab:green",
              label="held-out puzzles solved")
    ax.set_ylim(top=4 * max(losses))  # room for the legend
    twin.set_ylim(-0.02, 1.35)
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper center",
              ncol=2)
    twin.set(ylabel="held-out puzzles solved")
    ax = fig.add_subplot(grid[1])
    kinds = sudoku_rules()[1]
    for (label, values), color in zip(residuals.items(), ["tab:red", "tab:green"], strict=True):
        ax.plot(values, "o", ms=3.5, color=color, label=label)
    for k, kind in enumerate(dict.fromkeys(kinds)):
        ax.axvline(16 * k - 0.5, color="gray", lw=0.6)
        ax.text(16 * k + 7.5, 1.02, {"box": "boxes"}.get(kind, f"{kind}s"), ha="center",
                fontsize=9)
    ax.set(xlabel="true Sudoku constraint", ylabel="relative distance to row space of A",
           ylim=(-0.03, 1.3), title="The rules, recovered from examples")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    for k, (z, title) in enumerate([(z_before, "untrained"), (z_after, "trained")]):
        ax = fig.add_subplot(grid[2 + k])
        guess = z.reshape(4, 4, 4).argmax(-1)
        confidence = z.reshape(4, 4, 4).max(-1)
        ax.imshow(confidence, cmap="Greys", vmin=0, vmax=2 / EPS, alpha=0.3)
        for r, c in itertools.product(range(4), range(4)):
            if puzzle[r, c] >= 0:
                ax.text(c, r, puzzle[r, c] + 1, ha="center", va="center", fontsize=16,
                        weight="bold")
            else:
                right = guess[r, c] == answer[r, c]
                ax.text(c, r, guess[r, c] + 1, ha="center", va="center", fontsize=16,
                        color="tab:green" if right else "tab:red")
        for k2 in (1.5,):
            ax.axhline(k2, color="k", lw=2)
            ax.axvline(k2, color="k", lw=2)
        ax.set(xticks=[], yticks=[], title=f"Held-out puzzle, {title}")
    fig.text(0.83, 0.04, "bold: given; green / red: right / wrong", ha="center", fontsize=9)
    return save(fig, out, "sudoku_optnet")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    grids = all_solutions()[rng.permutation(288)]
    n_train, n_test, iters, batch = (200, 60, 40, 25) if quick else (1000, 200, 300, 50)
    train_p, train_a = make_puzzles(grids[:230], n_train, 9, rng)
    test_p, test_a = make_puzzles(grids[230:], n_test, 9, rng)
    x_train, y_train = one_hot(train_p), one_hot(train_a)
    x_test = one_hot(test_p)
    model = OptNetSudoku(torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    rules = sudoku_rules()[0]
    residuals = {"random A (start)": outside_row_space(model.A.detach().numpy(), rules)}
    with torch.no_grad():
        z_before = model(x_test)
    losses, accuracy = [], [(0, solved(z_before, test_a).mean())]
    for it in progress(range(iters), desc="learn A, b"):
        idx = torch.randint(n_train, (batch,))
        loss = ((model(x_train[idx]) - y_train[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (it + 1) % (iters // 5) == 0:
            with torch.no_grad():
                accuracy.append((it + 1, solved(model(x_test), test_a).mean()))
    with torch.no_grad():
        z_after = model(x_test)
    residuals["learned A"] = outside_row_space(model.A.detach().numpy(), rules)
    blanks = test_p < 0
    metrics = {
        "held-out puzzles solved, untrained": float(solved(z_before, test_a).mean()),
        "held-out puzzles solved, trained": float(solved(z_after, test_a).mean()),
        "held-out blank cells right, untrained": cell_accuracy(z_before, test_a, blanks),
        "held-out blank cells right, trained": cell_accuracy(z_after, test_a, blanks),
        "true constraints outside span(A), median distance, start":
            float(np.median(residuals["random A (start)"])),
        "true constraints outside span(A), median distance, learned":
            float(np.median(residuals["learned A"])),
        "first loss (mean of 5)": float(np.mean(losses[:5])),
        "final loss (mean of 5)": float(np.mean(losses[-5:])),
    }
    metrics["loss reduction factor"] = (metrics["first loss (mean of 5)"]
                                        / metrics["final loss (mean of 5)"])
    path = plot(losses, accuracy, residuals, test_p[0], test_a[0],
                z_before[0].numpy(), z_after[0].numpy(), out)
    report(f"OptNet Sudoku ({iters} iterations of {batch} puzzles, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
