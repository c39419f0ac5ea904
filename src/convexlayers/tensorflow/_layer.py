"""``CvxpyLayer`` for TensorFlow and Keras."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cvxpy as cp
import keras
import tensorflow as tf

from convexlayers._core import SolutionMap, SolveInfo
from convexlayers._core._executor import HasExecutor
from convexlayers._core._report import check_on_failure, check_warm_start
from convexlayers._errors import ConvexLayersError, ParameterError
from convexlayers.derivative import AbstractAdjoint, AbstractLinearSolver
from convexlayers.tensorflow._ops import check_not_xla, solve
from convexlayers.tensorflow._shapes import static_output_shapes


class CvxpyLayer(keras.layers.Layer, HasExecutor):
    """A differentiable convex optimization layer for TensorFlow.

    The call solves the problem for the given parameter values (a batch at once);
    ``tf.GradientTape`` differentiates the solution with respect to them. It runs
    eagerly, inside ``tf.function`` and inside Keras models (``fit``, ``predict``).

    It is a Keras layer so that Keras sees it: assigned as an attribute of your own
    ``keras.layers.Layer`` it is tracked as a sublayer, and its ``supports_jit =
    False`` keeps ``model.compile(jit_compile="auto")`` from trying to compile the
    Python solver with XLA. A CVXPY problem has no Keras config, so to save a model,
    build the problem inside your own layer from plain values (README: TensorFlow > Keras).

    Args:
        problem: a CVXPY problem that is DPP (``problem.is_dpp()``), or with
            ``gp=True`` log-log convex and DPP (``problem.is_dgp(dpp=True)``).
        parameters: the problem's parameters, in the order the layer takes values.
        variables: the outputs: problem variables and/or constraint dual variables
            (``constraint.dual_variables[0]``). Default: every problem variable.
        gp: parse the problem as a log-log convex program.
        solver: None (default: NATIVE on batches of dense LPs/QPs, else CLARABEL; see
            the manual), "CLARABEL", "SCS", "ECOS" or "NATIVE".
        solver_args: default solver settings; a call's ``solver_args`` override them.
        linear_solver: shorthand for ``adjoint=ImplicitAdjoint(linear_solver=...)``.
        refine: shorthand kept from 0.1: True, "auto" or False is
            ``adjoint=ImplicitAdjoint(polish=True / "derivative" / False)``.
        on_failure: "raise" (default): a call raises ``SolverError`` when some batch
            elements have no solution; "nan": those elements get NaN outputs and zero
            gradients, the rest is solved as usual, and ``layer.info.failed`` lists them.
        adjoint: the derivative strategy (default ``ImplicitAdjoint()`` from
            ``convexlayers.derivative``: outputs polished to the exact solution by Newton
            steps on the KKT conditions, so that they agree with their gradients; the
            backward pass reuses the last step's factorization).
        executor: solve batches larger than one chunk on a ``concurrent.futures.Executor``
            (a process pool, a Dask or Ray cluster), forward and backward;
            ``convexlayers.ChunkedExecutor(executor, chunk_size, timeout)`` tunes it.
            Settable later as ``layer.executor``; not pickled or copied with the layer.
        name: the Keras layer name.

    The layer pickles and deep-copies; one layer may be called from several threads.

    Example:
        >>> import cvxpy as cp, tensorflow as tf
        >>> x = cp.Variable(2); A = cp.Parameter((3, 2)); b = cp.Parameter(3)
        >>> prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)), [x >= 0])
        >>> layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
        >>> sol, = layer(tf.ones((3, 2)), tf.ones(3))
        >>> sol.shape, sol.dtype.name
        (TensorShape([2]), 'float32')
    """

    def __init__(
        self,
        problem: cp.Problem,
        parameters: Sequence[cp.Parameter],
        variables: Sequence[cp.Variable] | None = None,
        gp: bool = False,
        solver: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        linear_solver: AbstractLinearSolver | None = None,
        refine: bool | str | None = None,
        on_failure: str = "raise",
        adjoint: AbstractAdjoint | None = None,
        executor: Any = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, autocast=False)
        smap = SolutionMap(
            problem,
            parameters,
            variables,
            gp=gp,
            solver=solver,
            solver_args=solver_args,
            linear_solver=linear_solver,
            refine=refine,
            on_failure=on_failure,
            adjoint=adjoint,
            executor=executor,
        )
        self._adopt(smap)

    def _adopt(self, smap: SolutionMap) -> None:
        self._info: SolveInfo | None = None
        self._map = smap
        self.supports_jit = False  # a Python callback has no XLA kernel
        self.built = True  # no weights: nothing to build

    def __reduce__(self) -> tuple:
        # pickle and copy.deepcopy: the compiled solution map travels, not a Keras config
        # (Keras' own __reduce__ would save a whole model, which needs get_config).
        return (_restore, (self._map, self.name))

    @property
    def info(self) -> SolveInfo | None:
        """Diagnostics of the last executed call: per-element status, iterations, times.

        In a graph this is the last call that ran, not the last one traced; the
        derivative residuals appear once a gradient has been computed.
        """
        return self._info

    def _record(self, info: SolveInfo) -> None:
        self._info = info

    @tf.autograph.experimental.do_not_convert  # plain Python: nothing for AutoGraph to do
    def __call__(
        self,
        *params: Any,
        solver_args: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
        warm_start: bool = False,
        training: Any = None,
    ) -> tuple[tf.Tensor, ...]:
        """Solve for the given parameter values; see :meth:`call`.

        Symbolic Keras inputs (the functional API) go through Keras' own ``__call__``;
        tensors and arrays are solved directly, so that errors keep their type and
        message. ``training`` is accepted for Keras and ignored: the layer behaves the
        same in training and inference.
        """
        del training
        if any(isinstance(p, keras.KerasTensor) for p in params):
            return super().__call__(*params, solver_args=solver_args, on_failure=on_failure,
                                    warm_start=warm_start)
        return self.call(*params, solver_args=solver_args, on_failure=on_failure,
                         warm_start=warm_start)

    @tf.autograph.experimental.do_not_convert
    def call(
        self,
        *params: Any,
        solver_args: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
        warm_start: bool = False,
    ) -> tuple[tf.Tensor, ...]:
        """Solve for the given parameter values.

        Inside a graph the run-time errors reach you as ``tf.errors.InvalidArgumentError``
        (ParameterError, SolverArgumentError) or ``tf.errors.UnknownError``
        (SolverError), with the same message.

        Args:
            *params: one tensor (or array, or ``tf.Variable``) per parameter, of the
                parameter's shape or with a leading batch dimension.
            solver_args: settings for this call (e.g. ``{"eps": 1e-8}`` or
                ``{"solve_method": "ECOS"}``).
            on_failure: "raise" or "nan" for this call (default: the layer's).
            warm_start: start SCS or NATIVE from this layer's previous solution, element
                by element (a cold start if that call had another batch size); the
                answer is the same to the tolerance, often in fewer iterations.

        Returns:
            One tensor per requested variable, with a leading batch dimension if any
            input had one, in the inputs' floating dtype (the widest if they differ;
            Keras' ``floatx()``, float32 by default, if none is floating).

        Raises:
            ParameterError: wrong count, shapes or batch sizes (at trace time when the
                static shapes show it), non-real dtypes; at run time also NaN/Inf and
                values outside a parameter's domain.
            SolverArgumentError: bad ``solver_args``.
            SolverError: some batch elements have no solution.
        """
        try:  # everything the static shapes and types show, before any work
            if len(params) != len(self._map.parameters):
                self._map.batch_spec(list(params))  # the count error, before converting
            tensors = _tensors(self._map, params)
            shapes = static_output_shapes(self._map, [None if t is None else t.shape
                                                      for t in tensors])
            self._map.backend(solver_args)
            if on_failure is not None:
                check_on_failure(on_failure)
            warm_start = check_warm_start(warm_start)
            check_not_xla()
        except ConvexLayersError as err:
            # Raised while tracing, AutoGraph would turn it into a StagingError; this
            # (AutoGraph's own) marker lets it through with its type. (AutoGraph reads it
            # with getattr; our exception classes do not declare it.)
            err.ag_pass_through = True  # type: ignore[attr-defined]
            raise
        dtype = _result_dtype(tensors)
        outputs = solve(self._map, self._record, [tf.cast(t, tf.float64) for t in tensors],
                        (solver_args, on_failure, warm_start), shapes)
        return tuple(tf.cast(o, dtype) for o in outputs)

    def get_config(self) -> dict[str, Any]:
        """Not available: a CVXPY problem cannot be written into a Keras config.

        Raises:
            NotImplementedError: always, saying what to do instead.
        """
        raise NotImplementedError(
            "CvxpyLayer has no Keras config: a CVXPY problem cannot be serialized. To save "
            "a model, wrap the layer in your own keras.layers.Layer whose __init__ builds "
            "the problem from plain values and whose get_config returns those values "
            "(see the README, section TensorFlow > Keras)."
        )


def _restore(smap: SolutionMap, name: str) -> CvxpyLayer:
    layer = CvxpyLayer.__new__(CvxpyLayer)
    keras.layers.Layer.__init__(layer, name=name, autocast=False)
    layer._adopt(smap)
    return layer


def _tensors(smap: SolutionMap, params: Sequence[Any]) -> list[tf.Tensor | None]:
    """Parameter values as dense real tensors (None stays None for the shape check)."""
    tensors: list[tf.Tensor | None] = []
    for spec, p in zip(smap.parameters, params, strict=True):
        if p is None:
            tensors.append(None)
            continue
        if isinstance(p, tf.SparseTensor | tf.RaggedTensor):
            sparse = isinstance(p, tf.SparseTensor)
            fix = "tf.sparse.to_dense(value)" if sparse else "value.to_tensor()"
            raise ParameterError(
                f"parameter {spec.label}: received a {type(p).__name__}; pass a dense tensor "
                f"({fix})."
            )
        try:
            t = tf.convert_to_tensor(p)
        except (TypeError, ValueError) as err:
            raise ParameterError(
                f"parameter {spec.label}: expected a tensor or array of numbers, received "
                f"{type(p).__name__} ({err})."
            ) from err
        if not (t.dtype.is_floating or t.dtype.is_integer or t.dtype.is_bool):
            raise ParameterError(
                f"parameter {spec.label}: expected real numbers, received a "
                f"{t.dtype.name} tensor."
            )
        tensors.append(t)
    return tensors


def _result_dtype(tensors: Sequence[tf.Tensor]) -> tf.DType:
    """The dtype of the outputs: the inputs' floating dtype, the widest if they differ."""
    floats = {t.dtype for t in tensors if t.dtype.is_floating}
    if not floats:
        return tf.as_dtype(keras.config.floatx())
    widest = max(d.size for d in floats)
    candidates = [d for d in floats if d.size == widest]
    return candidates[0] if len(candidates) == 1 else tf.float32  # float16 with bfloat16
