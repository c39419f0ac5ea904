"""Factorizations kept from a forward pass for its backward pass.

Polishing in the forward pass factors J at (almost) the point the derivative needs;
the backward pass, which only sees plain arrays, finds that factorization again by a
fingerprint of the point. A small LRU cache: a miss only costs a new factorization.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from convexlayers.derivative import FactorStore


def fingerprint(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> bytes:
    """A digest of a solution point: the bytes of x and y (read in place) and of θ's
    row sums, not of θ itself (megabytes for a large batch; hashing it took 8 ms a call
    on the OptNet QP at batch 128). A collision would cost no correctness: the
    derivative refines against its own J, and factors afresh where the cached factors
    do not solve it. SHA-1 is twice as fast as BLAKE2 here."""
    h = hashlib.sha1(usedforsecurity=False)
    theta = np.asarray(theta, dtype=np.float64)
    for a in (np.asarray(theta.shape, dtype=np.float64), theta.sum(axis=-1), x, y):
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.digest()


class FactorCache:
    """Thread-safe LRU map fingerprint -> :class:`FactorStore`; empty when copied."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, FactorStore] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: bytes, factors: FactorStore) -> None:
        with self._lock:
            self._items[key] = factors
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, key: bytes) -> FactorStore | None:
        with self._lock:
            return self._items.get(key)

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self._items = OrderedDict()
        self._lock = threading.Lock()
