"""numba kernels behind layers/compiled.py (imported only where numba is).

Every value keeps its type (float32 stays float32: typed zeros and operands
are passed in, never Python float literals, which numba would widen), and
fastmath stays off, so each operation rounds as NumPy's does. Each kernel
works on a range of planes (a sample's channel) with the GIL released; the
caller runs ranges on its own threads (numba's threading layers are not
used: the built-in one aborts the process when two threads call it, and
OpenMP's spinning workers fought OpenBLAS's for the cores, taking a
MobileNet-v1 pass from 30 to 190 ms at two threads). Each value is computed
by one thread in a fixed order, so the thread count never changes a result.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _maximum(value, bound):
    """NumPy's maximum: NaN stays NaN."""
    return value if value > bound or value != value else bound


@njit(cache=True, inline="always")
def _minimum(value, bound):
    return value if value < bound or value != value else bound


@njit(cache=True)
def _step(values, code, first, second):
    """One step over one plane; `code`: the operation's position in
    steps.OPERATIONS (subtract, divide, multiply, add, relu, clip), which
    compiled._CODES numbers and the tests run one by one."""
    size = values.shape[0]
    if code == 0:
        for i in range(size):
            values[i] = values[i] - first
    elif code == 1:
        for i in range(size):
            values[i] = values[i] / first
    elif code == 2:
        for i in range(size):
            values[i] = values[i] * first
    elif code == 3:
        for i in range(size):
            values[i] = values[i] + first
    elif code == 4:
        if first != second:  # a slope; `second` is a typed zero
            for i in range(size):
                value = values[i]
                values[i] = _maximum(value, second) + _minimum(value, second) * first
        else:
            for i in range(size):
                values[i] = _maximum(values[i], second)
    else:  # NumPy's clip: min(max(x, low), high), NaN kept
        for i in range(size):
            value = values[i]
            if value == value:
                value = value if value > first else first
                value = value if value < second else second
            values[i] = value


@njit(cache=True, nogil=True)
def run_steps(blob, codes, operands, first_plane, end_plane):
    """blob: (samples, channels, values); operands: (steps, 2, channels);
    planes [first_plane, end_plane) in samples x channels order."""
    channels = blob.shape[1]
    for plane in range(first_plane, end_plane):
        channel = plane % channels
        values = blob[plane // channels, channel]
        for index in range(codes.shape[0]):
            _step(values, codes[index], operands[index, 0, channel], operands[index, 1, channel])


@njit(cache=True, nogil=True)
def add_then_steps(first, second, out, codes, operands, first_plane, end_plane):
    """out = first + second, then the element-wise steps, plane by plane
    (all three (samples, channels, values)); planes [first_plane,
    end_plane) in samples x channels order."""
    channels = out.shape[1]
    for plane in range(first_plane, end_plane):
        sample, channel = plane // channels, plane % channels
        a, b, values = first[sample, channel], second[sample, channel], out[sample, channel]
        for i in range(values.shape[0]):
            values[i] = a[i] + b[i]
        for index in range(codes.shape[0]):
            _step(values, codes[index], operands[index, 0, channel], operands[index, 1, channel])


@njit(cache=True)
def _copy_every(target, source, stride):
    """target[i] = source[i * stride]; plain 0-based loops, which LLVM
    vectorizes (a computed index that may be negative it does not)."""
    if stride == 1:
        for i in range(target.shape[0]):
            target[i] = source[i]
    else:
        for i in range(target.shape[0]):
            target[i] = source[i * stride]


@njit(cache=True)
def _phase_planes(source, phases, pad_h, pad_w, stride_h, stride_w, width):
    """The plane zero-padded and split into stride_h x stride_w phases (every
    stride-th row and column from each start), each laid flat in rows of
    `width`, with one zero row more than it fills (the last offsets' runs
    pass its end)."""
    phases[:] = 0
    height, plane_width = source.shape
    for r in range(height):
        padded_row = r + pad_h
        row_start = (padded_row // stride_h) * width
        for column_phase in range(stride_w):
            first = (column_phase - pad_w) % stride_w  # the first column of this phase
            if first >= plane_width:
                continue
            count = (plane_width - 1 - first) // stride_w + 1
            start = row_start + (first + pad_w) // stride_w
            target = phases[(padded_row % stride_h) * stride_w + column_phase][start:start + count]
            _copy_every(target, source[r][first:], stride_w)


@njit(cache=True)
def _weighted_runs(sums, phases, weights, shifts, phase_of):
    """sums = phases[phase_of[0]][shifts[0]:] * weights[0] + ... in offset
    order, each a run as long as `sums`: Convolution._depthwise's sums."""
    length = sums.shape[0]
    run, weight = phases[phase_of[0]][shifts[0]:shifts[0] + length], weights[0]
    for i in range(length):
        sums[i] = run[i] * weight
    for k in range(1, weights.shape[0]):
        run, weight = phases[phase_of[k]][shifts[k]:shifts[k] + length], weights[k]
        for i in range(length):
            sums[i] = sums[i] + run[i] * weight


@njit(cache=True, nogil=True)
def depthwise(x, filters, bias, has_bias, shifts, phase_of, stride_h, stride_w, pad_h, pad_w,
              rows, width, codes, operands, out, first_plane, end_plane):
    """out[n, c] = the sum over kernel offsets (row-major) of the padded
    input times the offset's weight, the first product added to nothing,
    then + bias: the values and the order of Convolution._depthwise's NumPy
    sums (each offset reads one phase plane at a fixed shift); then the
    element-wise steps (`codes`, `operands`: as run_steps takes them) on
    the plane while it is in cache. Planes [first_plane, end_plane) in
    samples x channels order."""
    channels = x.shape[1]
    out_height, out_width = out.shape[2], out.shape[3]
    phases = np.empty((stride_h * stride_w, rows * width), dtype=x.dtype)
    sums = np.empty(out_height * width, dtype=x.dtype)
    for plane in range(first_plane, end_plane):
        sample, channel = plane // channels, plane % channels
        _phase_planes(x[sample, channel], phases, pad_h, pad_w, stride_h, stride_w, width)
        _weighted_runs(sums, phases, filters[channel], shifts, phase_of)
        target = out[sample, channel]
        for row in range(out_height):
            line, run = target[row], sums[row * width:row * width + out_width]
            if has_bias:
                for column in range(out_width):
                    line[column] = run[column] + bias[channel]
            else:
                for column in range(out_width):
                    line[column] = run[column]
        values = target.reshape(out_height * out_width)
        for index in range(codes.shape[0]):
            _step(values, codes[index], operands[index, 0, channel], operands[index, 1, channel])
