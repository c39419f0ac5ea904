"""The example gallery, each example in its reduced form, and the documentation site.

Every script in examples/ (but quickstart.py, run by ``make demo``) has
``main(quick=True, out=...)``: the same code path as the full run, with fewer
iterations. Each test runs it in this process and checks what the example claims.
The figures land in one temporary folder, which the last test hands to
``mkdocs build --strict`` as the gallery's images (docs/hooks/gallery.py).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
if not (EXAMPLES / "_common.py").exists():  # tests run from an sdist, which has no examples/
    pytest.skip("examples/ is not here", allow_module_level=True)
GALLERY = sorted(p.stem for p in EXAMPLES.glob("*.py")
                 if not p.stem.startswith("_") and p.stem != "quickstart")


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("gallery")


@pytest.fixture(scope="module", autouse=True)
def _examples_on_path():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))
        mp.setenv("CONVEXLAYERS_EXAMPLES_NO_BAR", "1")
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        yield


def run(name: str, figures: pathlib.Path) -> dict:
    metrics = importlib.import_module(name).main(quick=True, out=figures)
    assert (figures / f"{name}.png").stat().st_size > 10_000
    return metrics


def test_gallery_is_covered():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(GALLERY) <= tested, f"examples without a test: {set(GALLERY) - tested}"


def test_activations(figures):
    m = run("activations", figures)
    # ReLU, sigmoid, softmax and sparsemax layers equal their closed forms, and so do
    # their gradients; the MLP trained through the softmax layer follows torch.softmax's.
    assert m["max output/gradient error"] <= 1e-6
    assert m["training-curve difference"] <= 1e-6
    assert m["final loss"] < 0.6 * m["first loss"]


def test_denoising_jax(figures):
    m = run("denoising_jax", figures)
    assert m["learned MSE (test)"] < m["initial MSE (test)"] / 1.5


def test_mpc_control(figures):
    m = run("mpc_control", figures)
    assert m["optimal held-out cost"] < m["learned held-out cost"] < m["naive held-out cost"]
    assert m["gap to optimum closed"] > 0.3


def test_adp_control(figures):
    m = run("adp_control", figures)
    # 8 iterations: the learned value function's policy has at least 40% less held-out
    # closed-loop cost than the untrained one (L = I), which does not stabilize the system.
    assert m["learned held-out cost"] < 0.6 * m["untrained held-out cost"]
    assert m["final training loss"] < m["first training loss"]


def test_decision_focused_keras(figures):
    m = run("decision_focused_keras", figures)
    assert m["regret, decision-focused"] < m["regret, two-stage"] / 1.3
    assert m["regret, two-stage"] < m["regret, mean value"]
    # Better decisions from worse predictions: the point of decision-focused learning.
    assert m["MSE of ĉ, decision-focused"] > m["MSE of ĉ, two-stage"]


def test_poisoning_tf(figures):
    m = run("poisoning_tf", figures)
    assert m["poisoned test loss"] > 1.1 * m["clean test loss"]
    assert m["max |δ|"] <= 0.5 + 1e-12


def test_portfolio(figures):
    m = run("portfolio", figures)
    assert m["final training Sharpe"] > 1.3 * m["first training Sharpe"]
    assert m["held-out Sharpe, tuned Markowitz"] > 1.2 * m["held-out Sharpe, textbook Markowitz"]


def test_gp_design(figures):
    m = run("gp_design", figures)
    assert m["reduction factor"] > 30


def test_optimal_transport_jax(figures):
    m = run("optimal_transport_jax", figures)
    assert m["layer vs Sinkhorn, max |ΔP|"] <= 1e-6
    assert m["reduction factor"] > 20
    assert m["relative metric error, learned"] < 0.5 * m["relative metric error, initial"]


def test_sudoku_optnet(figures):
    m = run("sudoku_optnet", figures)
    # 40 iterations: the loss falls, the blank cells of held-out puzzles (digits of grids
    # never seen in training) beat chance, and A moves toward Sudoku's rules.
    assert m["loss reduction factor"] > 1.4
    cells = "held-out blank cells right"
    assert m[f"{cells}, trained"] > m[f"{cells}, untrained"] + 0.1
    assert (m["true constraints outside span(A), median distance, learned"]
            < m["true constraints outside span(A), median distance, start"])


def test_supply_chain(figures):
    m = run("supply_chain", figures)
    assert m["held-out profit, learned"] > 1.01 * m["held-out profit, plan for mean demand"]
    assert m["gap to optimum closed"] > 0.7


def test_mlx_quickstart(figures):
    pytest.importorskip("mlx.core")
    pytest.importorskip("torch")
    m = run("mlx_quickstart", figures)
    # The student learns the teacher's QP from its solutions (25 float32 Adam steps cut the
    # held-out error at least fivefold); in float64 the MLX layer's forward pass equals
    # problem.solve(), and its loss and gradients equal the PyTorch layer's.
    assert m["held-out MSE, learned"] < 0.2 * m["held-out MSE, start"]
    assert m["exact zeros in teacher solutions"] > 0.2  # solutions on the simplex's faces
    assert m["forward error vs problem.solve()"] < 1e-8
    assert m["loss difference vs torch"] < 1e-12
    assert m["gradient difference vs torch"] < 1e-10 * (1 + m["gradient scale"])
    assert m["output dtype"] == "float32"


def test_ddp_training(figures):
    m = run("ddp_training", figures)
    # Two DDP processes, each on half of every minibatch, train as one process on the whole:
    # the same all-reduced gradients and parameters, step by step, to rounding error.
    assert m["max one-step gradient difference"] <= 1e-10
    assert m["max gradient difference"] <= 1e-10
    assert m["max parameter difference"] <= 1e-10
    assert m["max loss difference"] <= 1e-10
    assert m["max difference between the ranks' parameters"] <= 1e-12
    # ... and they are training: the parameters move and the loss on all data falls.
    assert m["max parameter change in training"] > 1e-2
    assert m["loss on all data, trained"] < 0.8 * m["loss on all data, initial"]


def test_distributed_dask(figures):
    pytest.importorskip("distributed")
    m = run("distributed_dask", figures)
    # The chunks went to both workers of the local Dask cluster, forward and backward ...
    assert m["chunks solved on the cluster"] >= 16
    assert m["workers that solved chunks"] == 2
    # ... and came back as in this process: the data, and training step by step.
    assert m["max data difference (cluster vs in-process)"] <= 1e-10
    assert m["max loss difference"] <= 1e-10
    assert m["max gradient difference"] <= 1e-10
    assert m["max parameter difference"] <= 1e-10
    # Training through the layer on the cluster learns: the held-out loss falls.
    assert m["held-out loss, trained"] < 0.5 * m["held-out loss, initial"]


def test_mpc_warm_start(figures):
    m = run("mpc_warm_start", figures)
    for solver in ("NATIVE", "SCS"):
        # Warm starts save iterations along the closed loop ...
        assert m[f"{solver}: iterations saved"] > 0.1
        # ... and change nothing else: inputs, states, cost and its gradient w.r.t. r.
        assert m[f"{solver}: max |Δu| warm vs cold"] <= 1e-7
        assert m[f"{solver}: max |Δx| warm vs cold"] <= 1e-7
        assert m[f"{solver}: |Δ cost| warm vs cold"] <= 1e-7 * m[f"{solver}: closed-loop cost"]
        assert (m[f"{solver}: |Δ d cost / dr| warm vs cold"]
                <= 1e-7 * (1 + abs(m[f"{solver}: d cost / dr"])))
    assert m["NATIVE: iterations saved"] > 0.2


def test_docs_build_strict(figures, tmp_path):
    """``mkdocs build --strict``: API pages from the docstrings, gallery with the figures above."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    missing = [n for n in GALLERY if not (figures / f"{n}.png").exists()]
    if missing:  # a selected subset of this file ran; the build would run these itself
        pytest.skip(f"figures of {missing} not made in this session")
    env = {**os.environ, "CONVEXLAYERS_GALLERY_FIGURES": str(figures), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    gallery = tmp_path / "site" / "gallery"
    for name in GALLERY:
        assert (gallery / "img" / f"{name}.png").exists()
    assert "convexlayers.torch.CvxpyLayer" in (tmp_path / "site/api/torch/index.html").read_text()
