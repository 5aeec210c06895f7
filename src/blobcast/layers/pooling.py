"""Pooling (MAX, AVE, STOCHASTIC at test time) and SPP, as Caffe computes them."""

from __future__ import annotations

import math

from . import compiled
from .base import LayerOp, register


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PoolingLayer::Reshape: ceil (or floor) rounding, then Caffe's rule that
    the last window must start inside the image (not in the padding)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_geometry(params, height: int, width: int):
    """(kernel, stride, pad, output size), each (h, w), as PoolingLayer::Reshape
    reads them; None for global pooling. Raises ValueError on bad settings."""
    if params.global_pooling:
        if params.has("kernel_size") or params.has("kernel_h"):
            raise ValueError("global pooling takes no kernel size")
        return None
    if params.has("kernel_h") or params.has("kernel_w"):
        kernel = (params.kernel_h, params.kernel_w)
    elif params.has("kernel_size"):
        kernel = (params.kernel_size, params.kernel_size)
    else:
        raise ValueError("no kernel size")
    pad = ((params.pad_h, params.pad_w) if (params.has("pad_h") or params.has("pad_w"))
           else (params.pad, params.pad))
    stride = ((params.stride_h, params.stride_w) if (params.has("stride_h") or params.has("stride_w"))
              else (params.stride, params.stride))
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ValueError(f"kernel {list(kernel)} and stride {list(stride)} must be positive")
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise ValueError("the padding must be smaller than the kernel")
    # OpenCV's and other forks' ceil_mode, where a file gives it, says the same as round_mode
    ceil_mode = params.ceil_mode if params.has("ceil_mode") else params.round_mode == "CEIL"
    out = (pooled_size(height, kernel[0], stride[0], pad[0], ceil_mode),
           pooled_size(width, kernel[1], stride[1], pad[1], ceil_mode))
    return kernel, stride, pad, out


def spp_levels(height: int, width: int, levels: int):
    """(kernel, pad, output size) of each SPP level, as SPPLayer::GetPoolingParam
    sets them (the stride equals the kernel)."""
    for level in range(levels):
        bins = 2 ** level
        kernel = (math.ceil(height / bins), math.ceil(width / bins))
        pad = ((kernel[0] * bins - height + 1) // 2, (kernel[1] * bins - width + 1) // 2)
        out = (pooled_size(height, kernel[0], kernel[0], pad[0], True),
               pooled_size(width, kernel[1], kernel[1], pad[1], True))
        yield kernel, pad, out


def average_divisor(xp, size, kernel, stride, pad, out):
    """AVE pooling's divisor per output position: the window counts the
    padding but not the overhang past it."""
    counts = []
    for n, k, s, p, o in zip(size, kernel, stride, pad, out):
        starts = xp.arange(o) * s - p
        counts.append(xp.minimum(starts + k, n + p) - starts)
    return counts[0][:, None] * counts[1][None, :]


def pool2d(xp, x, method: str, kernel, stride, pad, out_shape):
    """Pool the last two axes of x (N, C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out_shape
    height, width = x.shape[2:]
    # Room for every window: the padding plus the overhang of ceil rounding.
    bottom = max(ph, (oh - 1) * sh + kh - height - ph)
    right = max(pw, (ow - 1) * sw + kw - width - pw)
    if method == "MAX":
        # each of the window's columns, then each of its rows, one pass (the kernel's too)
        _check_passes(kh + kw, x.shape[0] * x.shape[1] * ow * (kw * (ph + height + bottom) + kh * oh))
        pooled = compiled.max_pool(x, kernel, stride, pad, out_shape,
                                   (ph + height + bottom, pw + width + right)) \
            if xp.__name__ == "numpy" else None
        if pooled is not None:
            return pooled
    fill = -xp.inf if method == "MAX" else 0.0
    # only read below: without padding, the input itself (a copy less)
    padded = xp.pad(x, [(0, 0), (0, 0), (ph, bottom), (pw, right)], constant_values=fill) \
        if max(ph, bottom, pw, right) > 0 else x
    if method == "MAX":
        # The maximum of a window is the maximum of its rows' maxima: kh + kw
        # passes instead of kh * kw, and the same values. The first maximum
        # of each is made from its two first operands, not from a copy.
        columns = [padded[:, :, :, j:j + sw * (ow - 1) + 1:sw] for j in range(kw)]
        across = _running_maximum(xp, columns)
        return _running_maximum(xp, [across[:, :, i:i + sh * (oh - 1) + 1:sh] for i in range(kh)])
    whole_plane = (oh, ow) == (1, 1) and (ph, pw) == (0, 0) and (kh, kw) == (height, width)
    if whole_plane and xp.__name__ == "numpy":
        # One window per plane (global pooling): its running sums in Caffe's
        # order (row by row) in one pass, as sequential as the window loop
        def running(values):
            flat = values.reshape(values.shape[:2] + (-1,))
            return xp.cumsum(flat, axis=2)[:, :, -1:].reshape(values.shape[:2] + (1, 1))

        if method == "AVE":
            divisor = average_divisor(xp, (height, width), kernel, stride, pad, out_shape)
            return running(x) / divisor.astype(x.dtype)
        return _stochastic(xp, running(x), running(x * x), x.dtype)
    _check_passes(kh * kw, kh * kw * x.shape[0] * x.shape[1] * oh * ow)
    windows = (padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
               for i in range(kh) for j in range(kw))
    if method == "AVE":
        total = next(windows).copy()
        for window in windows:
            total += window
        divisor = average_divisor(xp, (height, width), kernel, stride, pad, out_shape)
        return total / divisor.astype(x.dtype)
    # STOCHASTIC at test time: the probability-weighted average sum(x^2)/sum(x).
    first = padded[:, :, 0:sh * (oh - 1) + 1:sh, 0:sw * (ow - 1) + 1:sw]
    next(windows)
    total, squares = first.copy(), first * first
    for window in windows:
        total += window
        squares += window * window
    return _stochastic(xp, total, squares, x.dtype)


def _running_maximum(xp, arrays):
    """maximum(...maximum(maximum(a0, a1), a2)..., an) in a new array."""
    if len(arrays) == 1:
        return arrays[0].copy()
    out = xp.maximum(arrays[0], arrays[1])
    for array in arrays[2:]:
        xp.maximum(out, array, out=out)
    return out


MAX_POOL_PASSES = 1_000_000             # window offsets, one array pass each
MAX_POOL_WORK = 10_000_000_000          # values those passes touch


def _check_passes(passes: int, work: int) -> None:
    """Refuse a kernel whose passes would take long: each kernel offset (MAX:
    each row and column) is one array pass, `work` the values they touch."""
    if passes > MAX_POOL_PASSES or work > MAX_POOL_WORK:
        raise ValueError(f"pooling by {passes} array passes over {work} values is past the bound of "
                         f"{MAX_POOL_PASSES} passes and {MAX_POOL_WORK} values")


def _stochastic(xp, total, squares, dtype):
    safe = xp.where(total > 0, total, 1)
    return xp.where(total > 0, squares / safe, 0).astype(dtype)


def max_pool_with_mask(xp, x, kernel, stride, pad, out_shape):
    """MAX pooling and Caffe's mask top: each output's input position
    h * W + w within its plane (as float), the first maximum of the window in
    row-major order winning, as PoolingLayer's strict > comparison."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out_shape
    height, width = x.shape[2:]
    bottom = max(ph, (oh - 1) * sh + kh - height - ph)
    right = max(pw, (ow - 1) * sw + kw - width - pw)
    padded = xp.pad(x, [(0, 0), (0, 0), (ph, bottom), (pw, right)], constant_values=-xp.inf)
    rows = xp.arange(oh)[:, None] * sh - ph
    cols = xp.arange(ow)[None, :] * sw - pw
    out = mask = None
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            index = ((rows + i) * width + cols + j).astype(x.dtype)
            if out is None:
                out, mask = window.copy(), xp.broadcast_to(index, window.shape).copy()
                continue
            better = window > out
            out = xp.where(better, window, out)
            mask = xp.where(better, index, mask)
    return out, mask


def _pool_values(batch_channels: int, height: int, width: int, geometry) -> int:
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = geometry
    padded = (height + ph + max(ph, (oh - 1) * sh + kh - height - ph)) * \
        (width + pw + max(pw, (ow - 1) * sw + kw - width - pw))
    return batch_channels * (padded + 3 * oh * ow)


@register("Pooling", settings="pooling_param", key_settings=(
    "pool", "kernel_size", "stride", "pad", "global_pooling", "round_mode", "ceil_mode"), tops=(1, 2))
class Pooling(LayerOp):
    """Caffe's pooling; MAX pooling's optional second top is the mask (each
    maximum's position in its input plane) that SegNet's Upsample reads."""

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        if len(shape) != 4:
            raise self.fail(f"pooling needs a 4-D input, got {list(shape)}")
        if len(self.layer.tops) > 1 and self.params.pool != "MAX":
            raise self.fail("only MAX pooling has a second (mask) top")
        try:
            geometry = pool_geometry(self.params, *shape[2:])
        except ValueError as error:
            raise self.fail(str(error)) from None
        return [shape[:2] + ((1, 1) if geometry is None else tuple(geometry[3]))] * len(self.layer.tops)

    def values_needed(self, shapes):
        shape = shapes[0]
        if len(shape) != 4:
            return super().values_needed(shapes)
        try:
            geometry = pool_geometry(self.params, *shape[2:])
        except ValueError as error:
            raise self.fail(str(error)) from None
        if geometry is None:
            return 4 * math.prod(shape)
        return _pool_values(shape[0] * shape[1], shape[2], shape[3], geometry)

    def forward(self, x):
        if x.ndim != 4:
            raise self.fail(f"pooling needs a 4-D input, got {list(x.shape)}")
        height, width = x.shape[2:]
        try:
            geometry = pool_geometry(self.params, height, width)
        except ValueError as error:
            raise self.fail(str(error)) from None
        if geometry is None:
            geometry = (height, width), (1, 1), (0, 0), (1, 1)
        if len(self.layer.tops) > 1:
            self.top_shapes([x.shape])
            return max_pool_with_mask(self.xp, x, *geometry)
        try:
            return (pool2d(self.xp, x, self.params.pool, *geometry),)
        except ValueError as error:  # a kernel past the bound on passes
            raise self.fail(str(error)) from None


@register("SPP", settings="spp_param")
class SpatialPyramidPooling(LayerOp):
    def top_shapes(self, shapes):
        n, c, height, width = shapes[0]
        levels = list(spp_levels(height, width, self.params.pyramid_height))
        if len(levels) == 1:
            return [(n, c) + tuple(levels[0][2])]
        return [(n, c * sum(out[0] * out[1] for _, _, out in levels))]

    def values_needed(self, shapes):
        n, c, height, width = shapes[0]
        return sum(_pool_values(n * c, height, width, (kernel, kernel, pad, out)) * 2
                   for kernel, pad, out in spp_levels(height, width, self.params.pyramid_height))

    def forward(self, x):
        height, width = x.shape[2:]
        levels = self.params.pyramid_height
        outputs = []
        for kernel, pad, out in spp_levels(height, width, levels):
            try:
                pooled = pool2d(self.xp, x, self.params.pool, kernel, kernel, pad, out)
            except ValueError as error:
                raise self.fail(str(error)) from None
            if levels == 1:
                return (pooled,)
            outputs.append(pooled.reshape(x.shape[0], -1))
        return (self.xp.concatenate(outputs, axis=1),)
