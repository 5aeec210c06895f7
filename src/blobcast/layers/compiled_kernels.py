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

# Planes are summed and stepped this many values at a time (a band), while
# the band is in the L1 cache: a 112x112 plane taken whole went through L2
# at every kernel offset and every step.
SUM_VALUES = 2048


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
        _steps_in_bands(blob[plane // channels, channel], codes, operands, channel)


@njit(cache=True, nogil=True)
def run_steps_on_columns(plane, codes, operands, start, end):
    """plane: (channels, positions); the steps on columns [start, end) of
    each channel."""
    for channel in range(plane.shape[0]):
        _steps_in_bands(plane[channel][start:end], codes, operands, channel)


@njit(cache=True)
def _steps_in_bands(values, codes, operands, channel):
    """Every step over SUM_VALUES values at a time, which stay in the L1
    cache from the first step to the last (a 112x112 plane stepped whole
    went through L2 at each step: MobileNet-v1's chains took 2.5 ms of a
    25 ms pass)."""
    for first in range(0, values.shape[0], SUM_VALUES):
        band = values[first:first + SUM_VALUES]
        for index in range(codes.shape[0]):
            _step(band, codes[index], operands[index, 0, channel], operands[index, 1, channel])


@njit(cache=True, nogil=True)
def add_then_steps(first, second, out, codes, operands, first_plane, end_plane):
    """out = first + second, then the element-wise steps, plane by plane
    (all three (samples, channels, values)); planes [first_plane,
    end_plane) in samples x channels order."""
    channels = out.shape[1]
    for plane in range(first_plane, end_plane):
        sample, channel = plane // channels, plane % channels
        a, b, values = first[sample, channel], second[sample, channel], out[sample, channel]
        for start in range(0, values.shape[0], SUM_VALUES):
            band = values[start:start + SUM_VALUES]
            a_band, b_band = a[start:start + SUM_VALUES], b[start:start + SUM_VALUES]
            for i in range(band.shape[0]):
                band[i] = a_band[i] + b_band[i]
            _steps_in_bands(band, codes, operands, channel)


@njit(cache=True)
def _phase_planes(source, phases, pad_h, pad_w, stride_h, stride_w, width):
    """The plane zero-padded and split into stride_h x stride_w phases (every
    stride-th row and column from each start), each laid flat in rows of
    `width`, with one zero row more than it fills (the last offsets' runs
    pass its end). Each row is copied by a plain loop over a slice (LLVM
    vectorizes those; an index that might be negative it does not), and
    what depends on the column phase alone is worked out once: done per row
    before, the copies took two thirds of a 14x14 depthwise layer's time."""
    phases[:] = 0
    height, plane_width = source.shape
    if stride_h == 1 and stride_w == 1:
        flat = phases[0]
        for r in range(height):
            start = (r + pad_h) * width + pad_w
            target, row = flat[start:start + plane_width], source[r]
            for i in range(plane_width):
                target[i] = row[i]
        return
    for column_phase in range(stride_w):
        first = (column_phase - pad_w) % stride_w  # the first column of this phase
        if first >= plane_width:
            continue
        count = (plane_width - 1 - first) // stride_w + 1
        column_start = (first + pad_w) // stride_w
        for r in range(height):
            padded_row = r + pad_h
            start = (padded_row // stride_h) * width + column_start
            target = phases[(padded_row % stride_h) * stride_w + column_phase][start:start + count]
            row = source[r][first:]
            for i in range(count):
                target[i] = row[i * stride_w]


@njit(cache=True)
def _nine_runs(part, phases, weights, shifts, phase_of, first):
    """_weighted_runs for a 3x3 kernel: the nine products of each value
    summed in one pass, in the same order, rather than nine passes over
    `part` (a third of the time of a 3x3 depthwise layer's sums)."""
    length = part.shape[0]
    s0, s1, s2 = shifts[0] + first, shifts[1] + first, shifts[2] + first
    s3, s4, s5 = shifts[3] + first, shifts[4] + first, shifts[5] + first
    s6, s7, s8 = shifts[6] + first, shifts[7] + first, shifts[8] + first
    r0, r1 = phases[phase_of[0]][s0:s0 + length], phases[phase_of[1]][s1:s1 + length]
    r2, r3 = phases[phase_of[2]][s2:s2 + length], phases[phase_of[3]][s3:s3 + length]
    r4, r5 = phases[phase_of[4]][s4:s4 + length], phases[phase_of[5]][s5:s5 + length]
    r6, r7 = phases[phase_of[6]][s6:s6 + length], phases[phase_of[7]][s7:s7 + length]
    r8 = phases[phase_of[8]][s8:s8 + length]
    w0, w1, w2, w3, w4 = weights[0], weights[1], weights[2], weights[3], weights[4]
    w5, w6, w7, w8 = weights[5], weights[6], weights[7], weights[8]
    for i in range(length):
        total = r0[i] * w0
        total = total + r1[i] * w1
        total = total + r2[i] * w2
        total = total + r3[i] * w3
        total = total + r4[i] * w4
        total = total + r5[i] * w5
        total = total + r6[i] * w6
        total = total + r7[i] * w7
        part[i] = total + r8[i] * w8


@njit(cache=True)
def _weighted_runs(sums, phases, weights, shifts, phase_of, first, end):
    """sums[first:end] = phases[phase_of[0]][shifts[0] + first:] * weights[0]
    + ... in offset order: Convolution._depthwise's sums, over a stretch of
    the flat plane short enough to stay in the L1 cache across the offsets."""
    length = end - first
    part = sums[first:end]
    if weights.shape[0] == 9:
        _nine_runs(part, phases, weights, shifts, phase_of, first)
        return
    start = shifts[0] + first
    run, weight = phases[phase_of[0]][start:start + length], weights[0]
    for i in range(length):
        part[i] = run[i] * weight
    for k in range(1, weights.shape[0]):
        start = shifts[k] + first
        run, weight = phases[phase_of[k]][start:start + length], weights[k]
        for i in range(length):
            part[i] = part[i] + run[i] * weight


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
    band = max(1, SUM_VALUES // width)  # output rows summed, then stepped, at a time
    for plane in range(first_plane, end_plane):
        sample, channel = plane // channels, plane % channels
        _phase_planes(x[sample, channel], phases, pad_h, pad_w, stride_h, stride_w, width)
        target = out[sample, channel]
        values = target.reshape(out_height * out_width)
        for first_row in range(0, out_height, band):
            end_row = min(out_height, first_row + band)
            _weighted_runs(sums, phases, filters[channel], shifts, phase_of,
                           first_row * width, end_row * width)
            for row in range(first_row, end_row):
                line, run = target[row], sums[row * width:row * width + out_width]
                if has_bias:
                    for column in range(out_width):
                        line[column] = run[column] + bias[channel]
                else:
                    for column in range(out_width):
                        line[column] = run[column]
            _steps_in_bands(values[first_row * out_width:end_row * out_width], codes, operands,
                            channel)


@njit(cache=True, nogil=True)
def unfold_2d(source, columns, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
              dilation_h, dilation_w, first_row, rows):
    """layers/unfold.py's columns for two spatial axes: source (planes,
    height, width); columns (planes, kernel offsets, at least `rows` output
    rows, output width), whose first `rows` rows get the output rows from
    `first_row` on: each offset's input value, or zero in the padding. The
    rows inside the input are worked out once per offset, and each row is
    copied by a loop over unsigned positions (an index that might be
    negative keeps LLVM from vectorizing)."""
    height, width = source.shape[1], source.shape[2]
    held, out_width = columns.shape[2], columns.shape[3]
    for plane in range(source.shape[0]):
        flat_source = source[plane].reshape(height * width)
        for i in range(kernel_h):
            row_shift = i * dilation_h - pad_h
            # the part's rows r whose input row (first_row + r) * stride_h + row_shift is inside
            row_low = min(rows, max(0, -((first_row * stride_h + row_shift) // stride_h)))
            row_high = max(row_low, min(rows, (height - 1 - row_shift) // stride_h - first_row + 1))
            for j in range(kernel_w):
                slot = columns[plane, i * kernel_w + j].reshape(held * out_width)
                shift = j * dilation_w - pad_w
                low = min(out_width, max(0, -(shift // stride_w)))
                high = max(low, min(out_width, (width - 1 - shift) // stride_w + 1))
                slot[:row_low * out_width] = 0
                slot[row_high * out_width:rows * out_width] = 0
                for r in range(row_low, row_high):
                    line = r * out_width
                    slot[line:line + low] = 0
                    slot[line + high:line + out_width] = 0
                    read = ((first_row + r) * stride_h + row_shift) * width + low * stride_w + shift
                    _copy_run(slot, np.uintp(line + low), flat_source, np.uintp(read),
                              high - low, stride_w)


@njit(cache=True, inline="always")
def _copy_run(target, start, source, first, count, stride):
    if stride == 1:
        for q in range(count):
            target[start + np.uintp(q)] = source[first + np.uintp(q)]
    else:
        for q in range(count):
            target[start + np.uintp(q)] = source[first + np.uintp(q * stride)]


@njit(cache=True)
def _maxima_of_runs(out, runs, count):
    """out[q] = maximum(...maximum(runs[0][q], runs[1][q])..., runs[count - 1][q])
    (runs: a 2-D array, a run a row): pooling.pool2d's running maximum
    across rows, its operands in the same order, one vectorizable pass over
    `out` per operand."""
    if count == 1:
        out[:] = runs[0]
        return
    first, second = runs[0], runs[1]
    for q in range(out.shape[0]):
        out[q] = _maximum(first[q], second[q])
    for k in range(2, count):
        run = runs[k]
        for q in range(out.shape[0]):
            out[q] = _maximum(out[q], run[q])


@njit(cache=True)
def _window_maxima(out, line, stride, count):
    """out[q] = maximum(...maximum(line[q * stride], line[q * stride + 1])...,
    line[q * stride + count - 1]): the running maximum across a row's
    windows, in the same order, one pass over `out` per window offset."""
    if count == 1:
        for q in range(out.shape[0]):
            out[q] = line[q * stride]
        return
    second = line[1:]
    for q in range(out.shape[0]):
        out[q] = _maximum(line[q * stride], second[q * stride])
    for j in range(2, count):
        run = line[j:]
        for q in range(out.shape[0]):
            out[q] = _maximum(out[q], run[q * stride])


@njit(cache=True, nogil=True)
def max_pool(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, padded_h, padded_w,
             lowest, first_plane, end_plane):
    """pooling.pool2d's MAX over planes [first_plane, end_plane) of x
    (samples, channels, height, width): each plane padded with `lowest`
    (-inf) to (padded_h, padded_w), each padded row's window maxima across
    its columns, then those across rows, in NumPy's operand order (its
    maximum keeps NaN and gives the second operand of two equal ones)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    rows = (out_h - 1) * stride_h + kernel_h
    padded = np.empty((padded_h, padded_w), dtype=x.dtype)
    across = np.empty((rows, out_w), dtype=x.dtype)  # no larger than a padded plane
    for plane in range(first_plane, end_plane):
        sample, channel = plane // channels, plane % channels
        padded[:, :] = lowest
        for r in range(height):
            target, row = padded[r + pad_h][pad_w:pad_w + width], x[sample, channel, r]
            for q in range(width):
                target[q] = row[q]
        for r in range(rows):
            _window_maxima(across[r], padded[r], stride_w, kernel_w)
        target_plane = out[sample, channel]
        for o in range(out_h):
            _maxima_of_runs(target_plane[o], across[o * stride_h:], kernel_h)


@njit(cache=True, nogil=True)
def max_pool_halves(x, out, first_plane, end_plane):
    """max_pool for 2x2 windows at stride 2 that tile each plane exactly (no
    padding, no overhang): the same operands in the same order (across each
    row's pair, then down the two rows), in one pass."""
    channels, out_h, out_w = x.shape[1], out.shape[2], out.shape[3]
    for plane in range(first_plane, end_plane):
        source, target = x[plane // channels, plane % channels], out[plane // channels,
                                                                    plane % channels]
        for o in range(out_h):
            top, bottom, row = source[2 * o], source[2 * o + 1], target[o]
            for q in range(out_w):
                row[q] = _maximum(_maximum(top[2 * q], top[2 * q + 1]),
                                  _maximum(bottom[2 * q], bottom[2 * q + 1]))


@njit(cache=True, nogil=True)
def winograd_tiles(x, tiles, pad_h, pad_w, first, tiles_w, first_channel, end_channel):
    """winograd.input_tiles: one sample's x (C, H, W), tile rows from
    `first` on, into tiles (16, C, rows * tiles_w), channels [first_channel,
    end_channel); the same operations in the same order (across the lines
    read, then across the columns). A channel's lines are read apart into
    their even and odd columns once, so that every loop after that runs at
    unit stride, over unsigned positions (as unfold_2d's)."""
    height, width = x.shape[1:]
    rows = tiles.shape[2] // tiles_w
    half = tiles_w + 1
    lines = 2 * rows + 2
    zero = x.dtype.type(0)
    even = np.empty(lines * half, dtype=x.dtype)
    odd = np.empty(lines * half, dtype=x.dtype)
    t_even = np.empty((4, half), dtype=x.dtype)
    t_odd = np.empty((4, half), dtype=x.dtype)
    # columns 2k - pad_w (even) and 2k + 1 - pad_w (odd) inside the input
    even_first, even_end = _inside(pad_w, width, half)
    odd_first, odd_end = _inside(pad_w - 1, width, half)
    top = 2 * first - pad_h
    flat = tiles.reshape(16, tiles.shape[1] * tiles.shape[2])
    for c in range(first_channel, end_channel):
        source = x[c].reshape(height * width)
        for line in range(lines):
            at = np.uintp(line * half)
            if 0 <= top + line < height:
                read = (top + line) * width
                _read_apart(even, at, half, source, read - pad_w, even_first, even_end, zero)
                _read_apart(odd, at, half, source, read + 1 - pad_w, odd_first, odd_end, zero)
            else:
                even[line * half:(line + 1) * half] = zero
                odd[line * half:(line + 1) * half] = zero
        for row in range(rows):
            _across_lines(even, 2 * row * half, half, t_even)
            _across_lines(odd, 2 * row * half, half, t_odd)
            base = np.uintp((c * rows + row) * tiles_w)
            for a in range(4):
                _across_columns(t_even, t_odd, np.uintp(a), flat, np.uintp(4 * a), base, tiles_w)


@njit(cache=True, inline="always")
def _across_lines(lines, start, half, t):
    """B^T d across four lines from `start` (each `half` long) into t (4, half)."""
    for k in range(half):
        d0 = lines[np.uintp(start + k)]
        d1 = lines[np.uintp(start + half + k)]
        d2 = lines[np.uintp(start + 2 * half + k)]
        d3 = lines[np.uintp(start + 3 * half + k)]
        t[0, np.uintp(k)] = d0 - d2
        t[1, np.uintp(k)] = d1 + d2
        t[2, np.uintp(k)] = d2 - d1
        t[3, np.uintp(k)] = d1 - d3


@njit(cache=True, inline="always")
def _across_columns(t_even, t_odd, a, flat, out, base, count):
    """(B^T d) B of line `a` of a tile row: tiles[out + b, base + k]."""
    one, two, three = np.uintp(1), np.uintp(2), np.uintp(3)
    for q in range(count):
        k = np.uintp(q)
        k1 = k + one
        flat[out, base + k] = t_even[a, k] - t_even[a, k1]
        flat[out + one, base + k] = t_odd[a, k] + t_even[a, k1]
        flat[out + two, base + k] = t_even[a, k1] - t_odd[a, k]
        flat[out + three, base + k] = t_odd[a, k] - t_odd[a, k1]


@njit(cache=True, inline="always")
def _down_columns(flat, j, base, count, sums, slot):
    """A^T m down column j of a tile row's products: sums[0 or 1, slot, k]."""
    four, eight, twelve = np.uintp(4), np.uintp(8), np.uintp(12)
    for q in range(count):
        k = np.uintp(q)
        m0, m1 = flat[j, base + k], flat[j + four, base + k]
        m2, m3 = flat[j + eight, base + k], flat[j + twelve, base + k]
        sums[0, slot, k] = (m0 + m1) + m2
        sums[1, slot, k] = (m1 - m2) - m3


@njit(cache=True, inline="always")
def _inside(shift, width, count):
    """The range of k in [0, count) with 0 <= 2k - shift < width."""
    first = max(0, (shift + 1) // 2)
    end = min(count, (width - 1 + shift) // 2 + 1) if width - 1 + shift >= 0 else 0
    return first, max(first, end)


@njit(cache=True, inline="always")
def _read_apart(target, at, count, source, offset, first, end, zero):
    """target[at + k] = source[offset + 2k] for k in [first, end), zero for
    the rest of [0, count)."""
    for k in range(first):
        target[at + np.uintp(k)] = zero
    start = np.uintp(offset + 2 * first)
    for k in range(end - first):
        target[at + np.uintp(first + k)] = source[start + np.uintp(2 * k)]
    for k in range(end, count):
        target[at + np.uintp(k)] = zero


@njit(cache=True, nogil=True)
def winograd_outputs(products, y, bias, has_bias, first, tiles_w, codes, operands,
                     first_output, end_output):
    """winograd.output_blocks, then the steps on the rows written, channel
    by channel while they are in cache: products (16, O, rows * tiles_w),
    y one sample's output (O, out_h, out_w), outputs [first_output,
    end_output). Returns whether a value (before the steps) is NaN or
    infinite."""
    out_h, out_w = y.shape[1:]
    rows = products.shape[2] // tiles_w
    sums = np.empty((2, 4, tiles_w), dtype=y.dtype)
    pairs = out_w // 2
    top = 2 * first
    bottom = min(out_h, 2 * (first + rows))
    largest = y.dtype.type(np.finfo(y.dtype).max)
    not_finite = False
    flat = products.reshape(16, products.shape[1] * products.shape[2])
    for o in range(first_output, end_output):
        b = bias[o]
        for row in range(rows):
            base = np.uintp((o * rows + row) * tiles_w)
            for j in range(4):
                _down_columns(flat, np.uintp(j), base, tiles_w, sums, np.uintp(j))
            for i in range(2):
                line = top + 2 * row + i
                if line >= out_h:
                    break
                target = y[o, line]
                r0, r1, r2, r3 = sums[i, 0], sums[i, 1], sums[i, 2], sums[i, 3]
                if has_bias:
                    for k in range(pairs):
                        target[2 * k] = ((r0[k] + r1[k]) + r2[k]) + b
                        target[2 * k + 1] = ((r1[k] - r2[k]) - r3[k]) + b
                    if out_w % 2:
                        target[out_w - 1] = ((r0[pairs] + r1[pairs]) + r2[pairs]) + b
                else:
                    for k in range(pairs):
                        target[2 * k] = (r0[k] + r1[k]) + r2[k]
                        target[2 * k + 1] = (r1[k] - r2[k]) - r3[k]
                    if out_w % 2:
                        target[out_w - 1] = (r0[pairs] + r1[pairs]) + r2[pairs]
        written = y[o, top:bottom].reshape(-1)
        for index in range(written.shape[0]):
            value = written[index]
            not_finite |= not (abs(value) <= largest)
        if codes.shape[0]:
            _steps_in_bands(written, codes, operands, o)
    return not_finite
