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
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from math import prod

import numpy as np

from .errors import BlobcastError

_state: dict = {"threads": None, "pool": None, "pool_size": 0, "sharing": None,
                "kernels_alone": None}
# Products smaller than this (multiply-adds) stay on the calling thread. A
# single product is never split: OpenBLAS sums a part of one differently from
# the whole in the last bits (its direct kernel takes products below
# 28 x 512 x 512 multiply-adds on AVX-512, and larger parts differ too).
MIN_SHARED_PRODUCT = 1 << 22
# A layer making at least this many multiply-adds a sample in parts of its
# own shares them between the engine's threads at batch 1 as well
# (single_thread_products): VGG16's layers and ResNet-50's first are above
# it, ResNet-50's others below.
LARGE_PRODUCTS = 1 << 26


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
    if _state["kernels_alone"] == threading.get_ident():
        return 1  # products_on_engine_threads: BLAS's threads hold the other cores
    return _kernel_threads()


def _kernel_threads() -> int:
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


def run_blocks(work, count: int, workers: int | None = None, with_worker: bool = False) -> None:
    """Call work(i) for i in range(count): on the engine's threads (at most
    `workers`, by default threads()) when there are several blocks and
    several threads, else in this thread. Each thread takes the next block
    left when it is done with one, so that a slow block or a thread the
    system holds back delays no other thread's share. With `with_worker`,
    work(i, w) is told which of the threads (0 to workers - 1) runs it, for
    a buffer of its own. The first exception raised is raised here."""
    workers = max(1, min(threads() if workers is None else workers, count))
    if workers == 1:
        for index in range(count):
            work(index, 0) if with_worker else work(index)
        return
    if _state["pool"] is None or _state["pool_size"] < workers:
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
        _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blobcast")
        _state["pool_size"] = workers
    taken = {"next": 0}
    lock = threading.Lock()
    failed = threading.Event()

    def take() -> int:
        with lock:
            index = taken["next"]
            taken["next"] = index + 1
        return index

    def share(worker: int) -> None:
        while (index := take()) < count:
            if failed.is_set():
                return
            try:
                work(index, worker) if with_worker else work(index)
            except BaseException:
                failed.set()
                raise

    futures = [_state["pool"].submit(share, worker) for worker in range(1, workers)]
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


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _blas_libraries() -> list:
    """Each loaded BLAS and its thread count now (OpenCV's wheels load an
    OpenBLAS of their own, on one thread, beside NumPy's)."""
    return [(library, library.num_threads)
            for library in _blas_controller().select(user_api="blas").lib_controllers]


@contextmanager
def products_on_engine_threads(wanted: bool, batch: int = 2):
    """While a pass runs: with several threads for the compiled kernels
    (the `fast` extra, which brings threadpoolctl), BLAS runs each product
    on its calling thread and the engine shares a batch's samples and a
    convolution's unfolded parts between its own threads (`matmul`,
    `share_products`). Why: OpenBLAS's idle threads spin for about 0.1 s
    after each product, on the cores the engine's threads need next, so that
    a second engine thread made a MobileNet-v1 pass no faster. What is
    shared is the very BLAS calls a pass on one thread makes, so the values
    are that pass's; a single large product runs on BLAS's own threads (as
    many as the pass found), as it does without sharing. Elsewhere, and
    within a pass already sharing, BLAS keeps its own threads. `wanted`: the
    pass runs on the host with the compiled kernels.

    At batch 1 a sample's products stay on BLAS's threads (its parts are too
    few to share), and the compiled kernels run on the pass's thread alone:
    beside BLAS's spinning threads a second kernel thread made MobileNet-v1
    (27 -> 29 ms) and ResNet-50 (91 -> 96 ms) slower on 2 cores. A kernel's
    values do not depend on its thread count."""
    workers = compiled_threads()
    if not wanted or workers <= 1 or _state["sharing"] is not None or \
            _state["kernels_alone"] is not None or _blas_controller() is None:
        yield
        return
    libraries = _blas_libraries()
    if batch < 2:
        if max((count for _, count in libraries), default=1) <= 1:  # no BLAS thread to spin
            yield
            return
        _state["kernels_alone"] = threading.get_ident()
        try:
            yield
        finally:
            _state["kernels_alone"] = None
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        _state["sharing"] = (threading.get_ident(), workers, libraries)
        try:
            yield
        finally:
            _state["sharing"] = None


def blas_threads():
    """Where this thread's products are shared: each BLAS back on as many
    threads as the pass found it with, for work that cannot give each engine
    thread a share."""
    sharing = _state["sharing"]
    if sharing is None or sharing[0] != threading.get_ident():
        return nullcontext()
    return _threads_restored(sharing[2])


@contextmanager
def _threads_restored(libraries: list):
    for library, count in libraries:
        library.set_num_threads(count)
    try:
        yield
    finally:
        for library, _ in libraries:
            library.set_num_threads(1)


@contextmanager
def single_thread_products(compiled: bool, large: bool, parts: int | None = None):
    """For work in parts that each make their own products (layers/winograd.py):
    yields how many of the engine's threads take the parts, while each BLAS
    runs every product on its calling thread, so that a part's values never
    depend on the thread count. `compiled`: the compiled kernels do the
    parts' other work (else NumPy, on threads() threads).

    At batch 1 (products_on_engine_threads) a `large` layer holds BLAS's own
    threads back and shares its parts between the engine's; any other stays
    on the pass's thread, its products on BLAS's threads: on ResNet-50's
    small layers, between products on BLAS's threads, the engine's threads
    made its pass slower (two threads: 78 -> 104 ms). So does a layer of
    fewer `parts` than threads (None: its parts can be shared)."""
    sharing = share_products()
    if sharing > 1:
        yield sharing
        return
    workers = _kernel_threads() if compiled else threads()
    if _state["kernels_alone"] == threading.get_ident() and \
            (not large or (parts is not None and parts < workers)):
        yield 1
        return
    libraries = _blas_libraries() if _blas_controller() is not None else []
    if workers <= 1 or all(count == 1 for _, count in libraries):
        yield workers
        return
    for library, _ in libraries:
        library.set_num_threads(1)
    try:
        yield workers
    finally:
        for library, count in libraries:
            library.set_num_threads(count)


def share_products() -> int:
    """How many threads share this thread's products (1: none)."""
    sharing = _state["sharing"]
    return sharing[1] if sharing is not None and sharing[0] == threading.get_ident() else 1


def matmul(a, b, out=None):
    """np.matmul(a, b, out=out). Where products are shared: a stack of
    products (a batch's samples, at least one a thread) split between the
    engine's threads along its first axis, each matrix product the very BLAS
    call it is unsplit, on BLAS's calling thread; a single product, or too
    few, on BLAS's own threads (a product's parts would not be summed as the
    whole: see MIN_SHARED_PRODUCT)."""
    workers = share_products()
    if workers <= 1 or not isinstance(b, np.ndarray):
        return np.matmul(a, b, out=out)
    stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    rows, depth, columns = a.shape[-2], a.shape[-1], b.shape[-1]
    if prod(stack) * rows * depth * columns < MIN_SHARED_PRODUCT:
        return np.matmul(a, b, out=out)  # one thread is as fast
    if not stack or stack[0] < workers:  # a thread would go without a sample
        with blas_threads():
            return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(stack + (rows, columns), dtype=np.result_type(a, b))
    bounds = [stack[0] * index // workers for index in range(workers + 1)]

    def part(index: int) -> None:
        cut = slice(bounds[index], bounds[index + 1])
        np.matmul(_stack_part(a, len(stack), cut), _stack_part(b, len(stack), cut), out=out[cut])

    run_blocks(part, workers, workers)
    return out


def _stack_part(array, axes: int, cut: slice):
    """array's part along the first of `axes` stack axes (broadcast where it has one)."""
    if array.ndim - 2 < axes or array.shape[0] == 1:
        return array
    return array[cut]
