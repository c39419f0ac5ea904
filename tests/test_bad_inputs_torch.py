"""The bad-input table (tests/bad_inputs.py) on the PyTorch layer: eagerly, and a few rows
under ``torch.compile(fullgraph=True)``.

Under ``torch.compile`` errors found from the values (raised by the solve op when it runs)
keep their type. Errors raised while Dynamo traces the layer's Python code (count, shapes,
settings) reach you with ``fullgraph=True`` as ``torch._dynamo.exc.Unsupported`` ("Observed
exception"), whose message quotes ours; without ``fullgraph`` Dynamo falls back to eager
for that call and raises ours.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo

from bad_inputs import (
    BUILD_ROWS,
    CALL_ROWS,
    CallRow,
    Raw,
    Result,
    check_row,
    readme_reference,
    row_id,
)
from convexlayers import ParameterError
from convexlayers.torch import CvxpyLayer
from zoo import readme_problem

# Compiling costs seconds per graph: a handful of representative rows.
COMPILED = {"shape", "solver_args_key", "empty_batch", "nan", "infeasible",
            "infeasible_kept_as_nan", "iteration_limit"}


def _tensor(value, grad: bool):
    if isinstance(value, Raw):
        return value.value
    t = torch.as_tensor(value)
    return t.requires_grad_() if grad and t.is_floating_point() else t


def _run(row: CallRow, mode: str) -> Result:
    args, kwargs = row.layer()
    layer = CvxpyLayer(*args, **kwargs)
    values = [_tensor(v, row.probe != "forward") for v in row.values()]

    def call(*vals):
        return layer(*vals, **row.call)

    if mode == "compile":
        torch._dynamo.reset()
        call = torch.compile(call, fullgraph=True)
    outs = call(*values)
    grads = None
    if row.probe in ("grad", "hessian"):
        loss = outs[0].sum()
        grads = torch.autograd.grad(loss, values, create_graph=row.probe == "hessian")
        if row.probe == "hessian":
            torch.autograd.grad(grads[0].sum(), values)
        grads = [g.detach().numpy() for g in grads]
    return Result([o.detach().numpy() for o in outs],
                  [str(o.dtype).removeprefix("torch.") for o in outs], grads)


def _expected(row: CallRow, mode: str) -> type[Exception]:
    if mode == "compile" and row.when == "trace":
        return torch._dynamo.exc.Unsupported  # quoting our exception
    assert row.error is not None
    return row.error


def _check(row: CallRow, mode: str) -> None:
    check_row(row, lambda: _run(row, mode), lambda: _expected(row, mode))


@pytest.mark.parametrize("row", CALL_ROWS, ids=row_id)
def test_call_eager(row):
    _check(row, "eager")


@pytest.mark.parametrize("row", [r for r in CALL_ROWS if r.kind in COMPILED], ids=row_id)
def test_call_compiled(row):
    _check(row, "compile")


@pytest.mark.parametrize("row", BUILD_ROWS, ids=row_id)
def test_construction(row):
    args, kwargs = row.build()
    with pytest.raises(row.error, match=row.match):
        CvxpyLayer(*args, **kwargs)


# -- what only PyTorch has: layouts and devices -------------------------------------------
@pytest.fixture
def layer():
    prob, A, b, x = readme_problem()
    return CvxpyLayer(prob, [A, b], [x])


def test_sparse_tensor(layer):
    with pytest.raises(ParameterError, match=r"'A': received a torch.sparse_coo tensor; pass a "
                                             r"dense one \(`.to_dense\(\)`\)"):
        layer(torch.ones(3, 2).to_sparse(), torch.ones(3))


def test_tensors_on_different_devices(layer):
    # No GPU here: the meta device stands in for a second device.
    with pytest.raises(ParameterError, match=r"different devices \('A' on meta, 'b' on cpu\); "
                                             r"move them to one device"):
        layer(torch.ones(3, 2, device="meta"), torch.ones(3))


def test_meta_tensors(layer):
    with pytest.raises(ParameterError, match=r"meta device \('A', 'b'\), which hold no values"):
        layer(torch.ones(3, 2, device="meta"), torch.ones(3, device="meta"))


def test_python_values_do_not_pin_a_device(layer):
    # A Python list next to a tensor: the tensor's device (and dtype) wins.
    A = torch.tensor(np.array([[1.0, 0], [0, 1], [1, 1]]))
    (x,) = layer(A, [1.0, 2.0, 3.0])
    assert x.dtype == torch.float64 and x.device == A.device
    ref = readme_reference(A.numpy(), np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(x.numpy(), ref, atol=1e-5)
