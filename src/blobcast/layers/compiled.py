"""Compiled kernels for the work NumPy does slowly: chains of element-wise
steps, depthwise convolutions and a two-input sum with the chain after it
(installed with the `fast` extra, numba); and `run_in_place`, which runs a
chain's steps in them where they apply, else in NumPy blocks.

Why hand-written: NumPy runs a BatchNorm + Scale + ReLU chain as five passes
over memory and a depthwise 3x3 as nine, each a separate call that a second
thread cannot share; a compiled loop makes one pass per cache-sized plane and
runs the planes on several threads. Each value still goes through the same
operations in the same order as the NumPy code beside it (layers/steps.py,
Convolution._depthwise), with no fused multiply-add and no reassociation
(numba's fastmath stays off), so the results are the same; the NumPy code
stays the reference, and tests hold the two equal.

Used only on the host, for float32 and float64 blobs of at least
MIN_VALUES values, and where
numba imports; BLOBCAST_COMPILED=0 turns it off. The first use on a machine
compiles the kernels (a few seconds), cached on disk after that.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from math import prod

import numpy as np

from ..threads import compiled_threads, run_blocks, run_channel_blocks
from . import allocation
from .steps import CLIP, OPERATIONS, apply_steps, per_channel

# A kernel takes blobs from this size on: on MobileNet-v1's 7x7 layers of
# 1024 channels (50,176 values) the depthwise kernel took 0.45 ms against
# NumPy's 0.75, and a BatchNorm-Scale-ReLU chain 0.06 against 0.15 ms.
MIN_VALUES = 1 << 12
# MAX pooling's kernel takes planes of this many values or more, and 2x2
# windows only where it has more than one thread. NumPy / kernel, VGG16's
# 2x2 pools at batch 8 on two threads: 224x224 planes 25.6 / 13.4 ms,
# 112x112 10.5 / 8.1 ms, 56x56 3.0 / 3.0 ms; on one thread 25.5 / 25.2,
# 10.3 / 14.7 and 3.3 / 3.2 ms; ResNet-50's 3x3 stride-2 pool at batch 1
# on one thread 1.5 / 1.1 ms. On smaller planes the kernel's work per plane
# costs more than NumPy's passes over the whole blob.
MIN_POOLED_PLANE = 1 << 13
# A blob's planes are shared between threads only in ranges of at least
# this many values each: a hand-off to a thread costs more than less work.
MIN_SHARE_VALUES = 1 << 15
BLOCK_BYTES = 1 << 18  # a block of a blob that stays in a core's L2 cache
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_CODES = {operation: code for code, operation in enumerate(OPERATIONS)}


# Loading the kernels (numba, and their code from its cache) takes about
# 0.4 s in each process: a one-shot `blobcast run` of MobileNet-v1 took 0.92 s
# with them against 0.53 s without. So a net takes them from this pass on
# (counted from 0), where they repay that; a one-shot run never loads them.
FROM_PASS = 1
_pass = threading.local()


@contextmanager
def for_pass(number: int):
    """Within a net's pass `number`: the kernels apply from FROM_PASS on."""
    previous = getattr(_pass, "allowed", True)
    _pass.allowed = number >= FROM_PASS
    try:
        yield
    finally:
        _pass.allowed = previous


def enabled() -> bool:
    return os.environ.get("BLOBCAST_COMPILED", "1").strip() != "0" and \
        getattr(_pass, "allowed", True) and _kernels() is not None


@lru_cache(maxsize=1)
def _kernels():
    try:
        import numba  # noqa: F401
    except ImportError:
        return None
    from . import compiled_kernels

    return compiled_kernels


def _in_ranges(kernel, planes: int, *arguments) -> None:
    """kernel(*arguments, first, end) over [0, planes) in one range a thread,
    each thread at least MIN_SHARE_VALUES values of the first array."""
    values = arguments[0].size
    _in_shares(kernel, planes, min(compiled_threads(), values // max(1, MIN_SHARE_VALUES)),
               *arguments)


def _in_shares(kernel, planes: int, workers: int, *arguments) -> list:
    """kernel(*arguments, first, end) over [0, planes) in `workers` ranges;
    what each range's call returned."""
    workers = max(1, min(workers, planes))
    bounds = [planes * index // workers for index in range(workers + 1)]
    results = [None] * workers

    def share(index: int) -> None:
        results[index] = kernel(*arguments, bounds[index], bounds[index + 1])

    run_blocks(share, workers, workers)
    return results


def worth(array) -> bool:
    return isinstance(array, np.ndarray) and array.dtype in FLOATS and \
        array.size >= MIN_VALUES and array.flags.c_contiguous and array.flags.writeable


def _step_arrays(steps: list, channels: int, dtype):
    """The steps as the kernels take them: each operation's number and its
    two operands per channel, in the blob's type; None where NumPy would
    compute a step in another type (a per-channel vector of another type)."""
    codes = np.empty(len(steps), dtype=np.int64)
    operands = np.empty((len(steps), 2, channels), dtype=dtype)
    for index, step in enumerate(steps):
        if per_channel(step.values):
            values = np.asarray(step.values)
            if values.dtype != dtype or values.shape != (channels,):
                return None
            operands[index, 0] = values
        else:
            operands[index, 0] = dtype.type(step.values)
        operands[index, 1] = dtype.type(step.high if step.operation == CLIP else 0)
        codes[index] = _CODES[step.operation]
    return codes, operands


def run_steps(array: np.ndarray, steps: list) -> bool:
    """Apply the steps to `array` in place in one compiled pass; False (and
    nothing done) where the compiled path does not apply."""
    if not steps or array.ndim < 2 or not worth(array) or not enabled():
        return False
    arrays = _step_arrays(steps, array.shape[1], array.dtype)
    if arrays is None:
        return False
    _in_ranges(_kernels().run_steps, array.shape[0] * array.shape[1],
               array.reshape(array.shape[0], array.shape[1], -1), *arrays)
    return True


def run_steps_on_columns(plane: np.ndarray, start: int, end: int, steps: list) -> bool:
    """Apply the steps in place to columns [start, end) of `plane` (channels x
    positions: one sample's output, a convolution's part of it) in one
    compiled pass, on this thread (the parts are what threads share); False
    (and nothing done) where the compiled path does not apply."""
    if not steps or plane.ndim != 2 or not worth(plane) or not enabled():
        return False
    arrays = _step_arrays(steps, plane.shape[0], plane.dtype)
    if arrays is None:
        return False
    _kernels().run_steps_on_columns(plane, *arrays, start, end)
    return True


def unfold_2d(source, columns, kernel, stride, pad, dilation, first_row: int, rows: int) -> bool:
    """layers/unfold.py's columns for two spatial axes where the kernel
    applies (source (..., height, width), columns (..., offsets, rows,
    width), both C-contiguous, of one type), on this thread with the GIL
    released: a part's NumPy copies held it, so that two threads unfolded
    no faster than one. False (and nothing done) elsewhere."""
    if len(kernel) != 2 or not worth(columns) or not isinstance(source, np.ndarray) or \
            source.dtype != columns.dtype or not source.flags.c_contiguous or \
            columns.ndim != source.ndim + 1 or not enabled():
        return False
    planes = prod(source.shape[:-2])
    _kernels().unfold_2d(source.reshape((planes,) + source.shape[-2:]),
                         columns.reshape((planes,) + columns.shape[-3:]),
                         *kernel, *stride, *pad, *dilation, first_row, rows)
    return True


def winograd_tiles(x, tiles, pad, first: int, tiles_w: int, workers: int) -> bool:
    """winograd.input_tiles with the GIL released, channels shared between
    `workers` threads (1: on this thread); False (and nothing done) where
    the compiled path does not apply."""
    if not worth(tiles) or not isinstance(x, np.ndarray) or x.dtype != tiles.dtype or \
            not x.flags.c_contiguous or not enabled():
        return False
    _in_shares(_kernels().winograd_tiles, x.shape[0], workers, x, tiles, *pad, first, tiles_w)
    return True


def winograd_operands(outputs: int, dtype, bias, steps):
    """What winograd_outputs takes of a layer's bias and steps, made once a
    layer (not once a part); None where the compiled path does not apply."""
    dtype = np.dtype(dtype)
    if dtype not in FLOATS or (bias is not None and (not isinstance(bias, np.ndarray) or
                                                     bias.dtype != dtype or
                                                     bias.shape != (outputs,))):
        return None
    arrays = _step_arrays(list(steps), outputs, dtype)
    if arrays is None:
        return None
    return (np.zeros(outputs, dtype) if bias is None else _writable(bias), bias is not None,
            *arrays)


def winograd_outputs(products, y, first: int, tiles_w: int, operands, workers: int):
    """winograd.output_blocks with the bias, then the steps on the rows
    written (`operands`: winograd_operands'), output channels shared between
    `workers` threads (1: on this thread): whether a value before the steps
    is NaN or infinite; None (and nothing done) where the compiled path does
    not apply."""
    if operands is None or not worth(products) or not isinstance(y, np.ndarray) or \
            y.dtype != products.dtype or not y.flags.c_contiguous or not enabled():
        return None
    bias, has_bias, codes, steps = operands
    return any(_in_shares(_kernels().winograd_outputs, y.shape[0], workers, products, y, bias,
                          has_bias, first, tiles_w, codes, steps))


def max_pool(x, kernel, stride, pad, out_shape, padded_shape):
    """pooling.pool2d's MAX pooling of a 4-D blob, plane by plane on the
    engine's threads (`padded_shape`: the padded plane, overhang included);
    None where the compiled path does not apply."""
    if not worth(x) or x.ndim != 4 or x.shape[2] * x.shape[3] < MIN_POOLED_PLANE or not enabled():
        return None
    halves = tuple(kernel) == tuple(stride) == (2, 2) and not any(pad) and \
        tuple(x.shape[2:]) == (2 * out_shape[0], 2 * out_shape[1])
    if kernel[0] * kernel[1] < 9 and compiled_threads() == 1 and not halves:
        return None  # NumPy's passes: as fast for small windows on one thread, or faster
    out = allocation.empty(np, x.shape[:2] + tuple(out_shape), x.dtype)
    if halves:  # one pass: 64 planes of 224x224, 1.3 ms (3.4 in NumPy's passes)
        _in_ranges(_kernels().max_pool_halves, x.shape[0] * x.shape[1], x, out)
        return out
    _in_ranges(_kernels().max_pool, x.shape[0] * x.shape[1], x, out, *kernel, *stride, *pad,
               *padded_shape, x.dtype.type(-np.inf))
    return out


def add(first, second, steps=()):
    """first + second, then `steps`, in one compiled pass per plane; None
    where the compiled path does not apply."""
    if not (worth(first) and worth(second)) or first.ndim < 2 or first.shape != second.shape or \
            first.dtype != second.dtype or not enabled():
        return None
    samples, channels = first.shape[:2]
    arrays = _step_arrays(list(steps), channels, first.dtype)
    if arrays is None:
        return None
    out = allocation.empty(np, first.shape, first.dtype)
    shape = (samples, channels, -1)
    _in_ranges(_kernels().add_then_steps, samples * channels, first.reshape(shape),
               second.reshape(shape), out.reshape(shape), *arrays)
    return out


def depthwise(x, filters, bias, stride, pad, phases, reads, shape_out, steps=()):
    """The depthwise convolution of a 4-D blob (`filters`: (channels, kernel
    values)) as Convolution._depthwise's NumPy sums make it, then `steps`
    applied to each plane while it is in cache: `phases`, the shape of a
    channel's phase planes, and `reads`, each kernel offset's (phase, run);
    None where the compiled path does not apply."""
    if not worth(x) or x.ndim != 4 or not enabled() or \
            filters.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        return None
    n, channels = x.shape[:2]
    arrays = _step_arrays(list(steps), channels, x.dtype)
    if arrays is None:
        return None
    out = allocation.empty(np, (n, channels) + tuple(shape_out), x.dtype)
    phase_of = np.array([phase for phase, _ in reads], dtype=np.intp)
    shifts = np.array([run.start for _, run in reads], dtype=np.intp)
    _in_ranges(_kernels().depthwise, n * channels, x, _writable(filters),
               np.zeros(channels, x.dtype) if bias is None else _writable(bias),
               bias is not None, shifts, phase_of, *stride, *pad, phases[1], phases[2], *arrays,
               out)
    return out


def _writable(array):
    """A C-contiguous array numba takes as its usual type: a read-only one
    (weights mapped from a file) would compile every kernel it meets again,
    a few seconds each."""
    return np.require(array, requirements=("C", "W"))


def run_in_place(array: np.ndarray, steps: list) -> None:
    """Apply the steps to a host array in place: in one compiled pass where
    it applies, else block by block (per sample, a run of channels) on the
    engine's threads. Each value goes through the same operations as layer
    by layer, so the results are identical."""
    if not steps or run_steps(array, steps):
        return
    if array.ndim < 2 or array.size == 0:
        apply_steps(np, array, steps, slice(None))
        return

    def work(sample: int, selected: slice) -> None:
        apply_steps(np, array[sample, selected], steps, selected)

    run_channel_blocks(work, array.shape[0], array.shape[1],
                       prod(array.shape[2:]) * array.itemsize, BLOCK_BYTES)
