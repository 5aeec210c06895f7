"""Pooling (MAX, AVE, STOCHASTIC at test time) and SPP, as Caffe computes them."""

from __future__ import annotations

import math

from ..registry import LayerOp, register


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PoolingLayer::Reshape: ceil (or floor) rounding, then Caffe's rule that
    the last window must start inside the image (not in the padding)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool2d(xp, x, method: str, kernel, stride, pad, out_shape):
    """Pool the last two axes of x (N, C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out_shape
    height, width = x.shape[2:]
    # Room for every window: the padding plus the overhang of ceil rounding.
    bottom = max(ph, (oh - 1) * sh + kh - height - ph)
    right = max(pw, (ow - 1) * sw + kw - width - pw)
    fill = -xp.inf if method == "MAX" else 0.0
    padded = xp.pad(x, [(0, 0), (0, 0), (ph, bottom), (pw, right)], constant_values=fill)
    windows = [padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
               for i in range(kh) for j in range(kw)]
    if method == "MAX":
        out = windows[0].copy()
        for window in windows[1:]:
            xp.maximum(out, window, out=out)
        return out
    if method == "AVE":
        total = windows[0].copy()
        for window in windows[1:]:
            total += window
        # The divisor counts the padding but not the overhang past it.
        starts_h = xp.arange(oh) * sh - ph
        starts_w = xp.arange(ow) * sw - pw
        count_h = xp.minimum(starts_h + kh, height + ph) - starts_h
        count_w = xp.minimum(starts_w + kw, width + pw) - starts_w
        return total / (count_h[:, None] * count_w[None, :]).astype(x.dtype)
    # STOCHASTIC at test time: the probability-weighted average sum(x^2)/sum(x).
    total = sum(windows[1:], windows[0].copy())
    squares = sum((w * w for w in windows[1:]), windows[0] * windows[0])
    safe = xp.where(total > 0, total, 1)
    return xp.where(total > 0, squares / safe, 0).astype(x.dtype)


@register("Pooling")
class Pooling(LayerOp):
    def forward(self, x):
        if x.ndim != 4:
            raise self.fail(f"pooling needs a 4-D input, got {list(x.shape)}")
        p = self.params
        height, width = x.shape[2:]
        if p.global_pooling:
            if p.has("kernel_size") or p.has("kernel_h"):
                raise self.fail("global pooling takes no kernel size")
            kernel, pad, stride = (height, width), (0, 0), (1, 1)
        else:
            if p.has("kernel_h") or p.has("kernel_w"):
                kernel = (p.kernel_h, p.kernel_w)
            elif p.has("kernel_size"):
                kernel = (p.kernel_size, p.kernel_size)
            else:
                raise self.fail("no kernel size")
            pad = (p.pad_h, p.pad_w) if (p.has("pad_h") or p.has("pad_w")) else (p.pad, p.pad)
            stride = ((p.stride_h, p.stride_w) if (p.has("stride_h") or p.has("stride_w"))
                      else (p.stride, p.stride))
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise self.fail("the padding must be smaller than the kernel")
        ceil_mode = p.round_mode == "CEIL"
        out = (pooled_size(height, kernel[0], stride[0], pad[0], ceil_mode),
               pooled_size(width, kernel[1], stride[1], pad[1], ceil_mode))
        return (pool2d(self.xp, x, p.pool, kernel, stride, pad, out),)


@register("SPP")
class SpatialPyramidPooling(LayerOp):
    def forward(self, x):
        xp = self.xp
        height, width = x.shape[2:]
        levels = self.params.pyramid_height
        outputs = []
        for level in range(levels):
            bins = 2 ** level
            kernel_h, kernel_w = math.ceil(height / bins), math.ceil(width / bins)
            pad_h = (kernel_h * bins - height + 1) // 2
            pad_w = (kernel_w * bins - width + 1) // 2
            out = (pooled_size(height, kernel_h, kernel_h, pad_h, True),
                   pooled_size(width, kernel_w, kernel_w, pad_w, True))
            pooled = pool2d(xp, x, self.params.pool, (kernel_h, kernel_w), (kernel_h, kernel_w),
                            (pad_h, pad_w), out)
            if levels == 1:
                return (pooled,)
            outputs.append(pooled.reshape(x.shape[0], -1))
        return (xp.concatenate(outputs, axis=1),)
