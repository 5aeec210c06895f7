"""Winograd's F(2x2, 3x3) for stride-1 3x3 convolutions (Convolution's
default where it applies; Net(winograd=False) or --no-winograd sums in
Caffe's order instead).

Each 2x2 block of outputs comes from a 4x4 tile of input through fixed
transforms whose coefficients are 0, +-1 (input and output) and +-1/2 (the
filters, transformed once in float64), and 16 products of (outputs x
channels) by (channels x tiles): 4 multiply-adds per output and channel
instead of 9. The input and output transforms only add and subtract, so
the error stays that of a direct sum's rounding (measured on VGG16's
layers: 2.9-6.5e-7 of a layer's largest value, against 3.3-5.3e-7 for the
unfolded product; docs/engine.md). Larger tiles (F(4x4, 3x3), as OpenCV's
F(6x6, 3x3)) save more products but multiply by 4 and 5 in the transforms:
20 times the error on the same layers, and no faster at batch 1.

Why hand-written: no library on the registries computes it without a
second engine. The transforms are NumPy code here (the reference, and
the GPU's path) and numba kernels in compiled_kernels.py that make the
same operations in the same order, tested equal bit for bit.

A sample is transformed a run of tile rows at a time (a part), whose size
depends on the layer's shape alone; the engine's threads take the parts,
each product on BLAS's calling thread, so no result depends on the thread
count.
"""

from __future__ import annotations

from math import prod

import numpy as np

from ..threads import LARGE_PRODUCTS, run_blocks, single_thread_products
from . import allocation, compiled
from .steps import apply_steps

# Below this many input channels the unfolded product is as fast (VGG16's
# first layer, 3 channels, is far faster unfolded).
MIN_CHANNELS = 16
# Nor on outputs of fewer tiles than this a sample: 16 products of a 7x7
# output's 16 tiles took longer than its one unfolded product (ResNet-50's
# 512-channel layers, 3.7 against 3.6 ms); 14x14 outputs (49 tiles) gain.
MIN_TILES = 32
# A part's transformed tiles take about this many bytes (16 x channels x
# tiles), at least MIN_PART_TILES tiles: the products pack the filters on
# every call, which parts of few tiles do not repay.
PART_BYTES = 2 << 20
MIN_PART_TILES = 256
# With fewer parts than this per thread, each part is shared between the
# threads (its channels, its 16 products, its output channels) instead.
SHARED_PARTS = 2


def applies(kernel, stride, dilation, group: int, ndim: int, channels: int, shape_out) -> bool:
    return ndim == 4 and tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and \
        tuple(dilation) == (1, 1) and group == 1 and channels >= MIN_CHANNELS and \
        prod(-(-size // 2) for size in shape_out) >= MIN_TILES


def transformed_filters(xp, weight) -> object:
    """G g G^T for every (output, channel) filter, as 16 matrices (outputs x
    channels), computed in float64 and rounded once."""
    host = np.asarray(weight.get() if hasattr(weight, "get") else weight, dtype=np.float64)
    outputs, channels = host.shape[:2]
    rows = _transformed(host, 2)  # G g: (O, C, 4, 3)
    both = _transformed(rows, 3)  # (G g) G^T: (O, C, 4, 4)
    transformed = np.empty((16, outputs, channels), dtype=weight.dtype)
    transformed[...] = both.reshape(outputs, channels, 16).transpose(2, 0, 1)
    return xp.asarray(transformed)


def _transformed(g, axis: int):
    """G applied along `axis` (3 values to 4): g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2."""
    g0, g1, g2 = (np.take(g, i, axis=axis) for i in range(3))
    return np.stack((g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2), axis=axis)


def part_rows(channels: int, tiles_h: int, tiles_w: int, itemsize: int, on_host: bool) -> int:
    """Tile rows in a part: a function of the layer's shape only."""
    if not on_host:
        return tiles_h
    tiles = max(MIN_PART_TILES, PART_BYTES // (16 * channels * itemsize))
    most = max(1, min(tiles_h, tiles // tiles_w))
    # As many parts as `most` rows make, but even: 28 rows in 9, 9, 9 and 1
    # left two threads at 18 and 10 rows (VGG16's 56x56 layers).
    return -(-tiles_h // -(-tiles_h // most))


def part_values(channels: int, outputs: int, spatial, pad, itemsize: int, on_host: bool) -> int:
    """Values one part's buffers take (its tiles and their products)."""
    tiles_h, tiles_w = (-(-(n + 2 * p - 2) // 2) for n, p in zip(spatial, pad))
    rows = part_rows(channels, tiles_h, tiles_w, itemsize, on_host)
    return 16 * (channels + outputs) * rows * tiles_w


def convolve(xp, x, filters, bias, pad, steps) -> object:
    """x (n, C, H, W) convolved with the transformed filters (16, O, C),
    padding `pad`, stride 1, plus `bias` (None: none), then `steps` in place:
    (n, O, H + 2 pad_h - 2, W + 2 pad_w - 2). None where an output (before
    the steps) is NaN or infinite: the transforms spread a NaN or an
    infinity in the input to the whole 2x2 block of outputs around it, and
    subtract one infinity from another (NaN) where a direct sum keeps it,
    so the caller computes such a layer in Caffe's order instead."""
    n, channels, height, width = x.shape
    outputs = filters.shape[1]
    out_h, out_w = height + 2 * pad[0] - 2, width + 2 * pad[1] - 2
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    on_host = xp is np
    rows = part_rows(channels, tiles_h, tiles_w, x.itemsize, on_host)
    y = allocation.empty(xp, (n, outputs, out_h, out_w), x.dtype)
    parts = [(sample, first) for sample in range(n) for first in range(0, tiles_h, rows)]
    buffers: dict = {}
    failed: list = []
    operands = compiled.winograd_operands(outputs, x.dtype, bias, steps) if on_host else None

    def part(index: int, worker: int, shared: int = 1) -> None:
        """Part `index` on thread `worker`, or shared by `shared` threads."""
        sample, first = parts[index]
        count = min(rows, tiles_h - first) * tiles_w
        if worker not in buffers:
            buffers[worker] = (xp.empty(16 * channels * rows * tiles_w, dtype=x.dtype),
                               xp.empty(16 * outputs * rows * tiles_w, dtype=x.dtype))
        tiles = buffers[worker][0][:16 * channels * count].reshape(16, channels, count)
        products = buffers[worker][1][:16 * outputs * count].reshape(16, outputs, count)
        if not (on_host and compiled.winograd_tiles(x[sample], tiles, pad, first, tiles_w,
                                                    shared)):
            input_tiles(xp, x[sample], tiles, pad, first, tiles_w)
        if shared > 1:  # each of the 16 products the very call it is unshared
            run_blocks(lambda k: xp.matmul(filters[k], tiles[k], out=products[k]), 16, shared)
        else:
            xp.matmul(filters, tiles, out=products)
        not_finite = compiled.winograd_outputs(products, y[sample], first, tiles_w, operands,
                                               shared) if on_host else None
        if not_finite is None:
            block = output_blocks(xp, products, y[sample], bias, first, tiles_w)
            not_finite = not bool(xp.isfinite(block).all())
            apply_steps(xp, block, steps, slice(None))
        if not_finite:
            failed.append(index)

    if not on_host:
        for index in range(len(parts)):
            part(index, 0)
        return None if failed else y
    large = 16 * tiles_h * tiles_w * channels * outputs >= LARGE_PRODUCTS
    with single_thread_products(compiled.enabled(), large) as workers:
        if workers > 1 and len(parts) < SHARED_PARTS * workers:
            for index in range(len(parts)):  # too few parts: each shared
                part(index, 0, workers)
        else:
            run_blocks(part, len(parts), workers, with_worker=True)
    return None if failed else y


def input_tiles(xp, x, tiles, pad, first: int, tiles_w: int) -> None:
    """One sample's (C, H, W) tiles from tile row `first` on, transformed
    (B^T d B), into tiles (16, C, rows * tiles_w); zeros in the padding."""
    channels, height, width = x.shape
    rows = tiles.shape[2] // tiles_w
    top = 2 * first - pad[0]
    lines = xp.zeros((channels, 2 * rows + 2, 2 * tiles_w + 2), dtype=x.dtype)
    start, end = max(top, 0), min(top + 2 * rows + 2, height)
    if end > start:
        lines[:, start - top:end - top, pad[1]:pad[1] + width] = x[:, start:end]
    d = [lines[:, i:i + 2 * rows:2] for i in range(4)]
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: the caller sees NaN
        across = (d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3])  # B^T d
        for a, t in enumerate(across):  # (B^T d) B
            e = [t[:, :, j:j + 2 * tiles_w:2] for j in range(4)]
            for b, value in enumerate((e[0] - e[2], e[1] + e[2], e[2] - e[1], e[1] - e[3])):
                tiles[4 * a + b] = value.reshape(channels, -1)


def output_blocks(xp, products, y, bias, first: int, tiles_w: int):
    """A^T m A (plus the bias) of a part's products (16, O, rows * tiles_w),
    written into one sample's output (O, out_h, out_w) from row 2 * first
    on; returns the rows written."""
    outputs, out_h, out_w = y.shape
    rows = products.shape[2] // tiles_w
    m = products.reshape(16, outputs, rows, tiles_w)
    block = y[:, 2 * first:min(out_h, 2 * (first + rows))]
    for i in range(2):
        with np.errstate(invalid="ignore", over="ignore"):
            r = [(m[j] + m[4 + j]) + m[8 + j] if i == 0 else (m[4 + j] - m[8 + j]) - m[12 + j]
                 for j in range(4)]
            even, odd = (r[0] + r[1]) + r[2], (r[1] - r[2]) - r[3]
            if bias is not None:
                even, odd = even + bias[:, None, None], odd + bias[:, None, None]
        target = block[:, i::2]
        target[:, :, 0::2] = even[:, :target.shape[1]]
        target[:, :, 1::2] = odd[:, :target.shape[1], :out_w // 2]
    return block

