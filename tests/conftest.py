"""Session set-up shared by the tests."""

from __future__ import annotations

import pytest

from convexlayers.solvers._ipm_compiled import warm_up


@pytest.fixture(scope="session", autouse=True)
def _compiled_ipm():
    """Compile the Numba kernel of the native solver once, before any test (and any
    worker process a test starts) needs it: workers then load it from the cache."""
    warm_up()
