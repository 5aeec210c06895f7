"""Where layers take their large arrays: NumPy's empty, or within an engine
pass on the host, the pass's pool (engine/buffers.py), which hands out again
the arrays of blobs the pass no longer needs.

Why: a fresh array of more than a few megabytes is memory the system maps
and zeroes on first touch, page by page; VGG16 at batch 8 spent about a
tenth of its pass there (its largest blobs take 103 MB). OpenCV and
onnxruntime keep their blobs' memory between passes for the same reason.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

_local = threading.local()


def empty(xp, shape, dtype):
    """xp.empty(shape, dtype), from the pass's pool where there is one (on
    the thread that runs the pass)."""
    pool = getattr(_local, "pool", None)
    if pool is None or xp is not np:
        return xp.empty(shape, dtype=dtype)
    return pool.empty(shape, dtype)


def done(array) -> None:
    """A scratch array from `empty` that nothing reads any more (no view of it
    is left either): the pass may hand it out again."""
    pool = getattr(_local, "pool", None)
    if pool is not None:
        pool.give_back(array)


@contextmanager
def drawing_from(pool):
    """Within the block, `empty` on this thread draws from `pool` (None: from NumPy)."""
    previous = getattr(_local, "pool", None)
    _local.pool = pool
    try:
        yield
    finally:
        _local.pool = previous
