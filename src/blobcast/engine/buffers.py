"""The arrays a net's passes hand on: each array a layer takes from the pool
(layers/allocation.py) and the engine gives back when its blob is released,
kept for the next layer or pass that asks for the same shape.

The engine gives an array back only where the net alone says nobody else
can see it (engine/memory.py: `MemoryPlan.reusable`, and the pass's
`owned`): allocated this pass by a built-in layer that returns new arrays,
read only by such layers, in no group of blobs sharing memory, never shown
to the caller (no keep_all, no on_blob). Reference counts decide nothing.
"""

from __future__ import annotations

import threading
import weakref
from math import prod

import numpy as np

# Smaller arrays come back from the C library's own free lists without
# being mapped anew; only larger ones are worth holding.
MIN_BYTES = 4 << 20


class ArrayPool:
    def __init__(self):
        self._free: dict = {}  # (shape, dtype) -> arrays nobody holds
        # id -> a weak reference to an array handed out this pass: one nobody
        # gives back (a blob a view was made of) is freed when its last holder goes
        self._lent: dict = {}
        self._lock = threading.Lock()  # passes of one net on several threads
        self.free_bytes = 0
        self.reused = 0  # arrays handed out again (for the tests and benchmarks)

    def empty(self, shape, dtype):
        shape, dtype = tuple(int(size) for size in shape), np.dtype(dtype)
        if prod(shape) * dtype.itemsize < MIN_BYTES:
            return np.empty(shape, dtype=dtype)
        with self._lock:
            free = self._free.get((shape, dtype))
            if free:
                array = free.pop()
                self.free_bytes -= array.nbytes
                self.reused += 1
            else:
                array = np.empty(shape, dtype=dtype)
            self._lent[id(array)] = weakref.ref(array)
        return array

    def give_back(self, array) -> bool:
        """Take back an array `empty` lent (or a whole, contiguous view of one)."""
        if not isinstance(array, np.ndarray):
            return False
        root = array if array.base is None else array.base
        if array is not root and (array.nbytes != getattr(root, "nbytes", -1) or
                                  not array.flags.c_contiguous):
            return False
        with self._lock:
            lent = self._lent.get(id(root))
            if lent is None or lent() is not root:
                return False
            del self._lent[id(root)]
            self._free.setdefault((root.shape, root.dtype), []).append(root)
            self.free_bytes += root.nbytes
        return True

    def end_pass(self) -> None:
        """Forget what is still lent: the caller's outputs now."""
        with self._lock:
            self._lent.clear()

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._lent.clear()
            self.free_bytes = 0
