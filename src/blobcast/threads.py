"""The engine's own threads, for the work BLAS does not do: element-wise
passes and depthwise convolutions, split into blocks that NumPy runs with
the GIL released.

The compiled kernels (the `fast` extra) take every core unless
BLOBCAST_THREADS=n or `set_threads(n)` says how many. NumPy's blocks take
one thread unless those ask for more: on
the 2-core machine the engine is measured on, a second thread made those
passes no faster (NumPy's calls on cache-sized blocks are too short for two
threads to overlap) and the whole pass 7-8% slower beside OpenBLAS's own
threads, which keep spinning for a while after each product.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .errors import BlobcastError

_state: dict = {"threads": None, "pool": None, "pool_size": 0}


def _default_threads() -> int:
    value = os.environ.get("BLOBCAST_THREADS", "").strip()
    if value:
        try:
            return _checked(int(value))
        except ValueError:
            raise BlobcastError(f"BLOBCAST_THREADS={value!r}: give a positive whole number") from None
    return 1


def _checked(count: int) -> int:
    if count < 1:
        raise BlobcastError(f"the thread count must be at least 1, not {count}")
    return count


def threads() -> int:
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def compiled_threads() -> int:
    """Threads for the compiled kernels (layers/compiled.py): the count
    BLOBCAST_THREADS or set_threads gave, else every core this process may
    run on, as BLAS takes them; unlike NumPy's short calls, one compiled pass
    over a blob shares well between threads."""
    if _state["threads"] is not None or os.environ.get("BLOBCAST_THREADS", "").strip():
        return threads()
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(count: int | None) -> None:
    """Use `count` threads from now on (None: the default again)."""
    count = None if count is None else _checked(int(count))
    if count != _state["threads"] and _state["pool"] is not None:
        _state["pool"].shutdown(wait=True)
        _state["pool"] = None
    _state["threads"] = count


def run_blocks(work, count: int, workers: int | None = None) -> None:
    """Call work(i) for i in range(count): on the engine's threads (at most
    `workers`, by default threads()) when there are several blocks and
    several threads, else in this thread. The first exception raised is
    raised here."""
    workers = min(threads() if workers is None else workers, count)
    if workers <= 1:
        for index in range(count):
            work(index)
        return
    if _state["pool"] is None or _state["pool_size"] < workers:
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
        _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blobcast")
        _state["pool_size"] = workers

    def share(first: int) -> None:  # every workers-th block, so that uneven blocks spread
        for index in range(first, count, workers):
            work(index)

    futures = [_state["pool"].submit(share, first) for first in range(1, workers)]
    try:
        share(0)
    finally:
        for future in futures:
            future.result()


def run_channel_blocks(work, samples: int, channels: int, channel_bytes: int,
                       block_bytes: int, threaded: bool = True) -> None:
    """Call work(sample, channels) for every sample and every run of channels
    (a slice) that fits in `block_bytes` at `channel_bytes` a channel; on the
    engine's threads unless `threaded` is false (a GPU's queue)."""
    width = max(1, min(channels, block_bytes // max(channel_bytes, 1)))
    blocks = -(-channels // width)

    def block(index: int) -> None:
        sample, first = divmod(index, blocks)
        work(sample, slice(first * width, min(channels, (first + 1) * width)))

    if threaded:
        run_blocks(block, samples * blocks)
    else:
        for index in range(samples * blocks):
            block(index)
