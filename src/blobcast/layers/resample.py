"""Resampling layers of the forks: the YOLO forks' nearest-neighbour
Upsample (with SegNet's max-unpool and Huawei ATC's strided form under the
same name) and PSPNet/DeepLab's bilinear Interp."""

from __future__ import annotations

from math import prod

from .base import LayerOp, register


@register("Upsample", settings="upsample_param", key_settings=(
    "scale", "scale_h", "scale_w", "upsample_h", "upsample_w", "stride", "stride_h", "stride_w"),
    bottoms=(1, 2))
class Upsample(LayerOp):
    """Three layers under one name, told apart by bottoms and settings. One
    bottom: the YOLO forks' nearest neighbour, out[h][w] = in[h / scale_h][w / scale_w].
    Stride settings (Huawei ATC's darknet Upsample): out[h][w] =
    scale * in[h / stride_h][w / stride_w], `stride` overriding both (default 2).
    Two bottoms (data, the mask top of a MAX Pooling): SegNet's max-unpool
    (caffe-segnet upsample_layer.cpp), each value written to its mask
    position in a zero plane of upsample_h x upsample_w, or of
    H * scale - pad_out; where a mask repeats a position, the last value wins."""

    origin = 'YOLO forks (nearest); SegNet (max-unpool, two bottoms); Huawei ATC (stride settings)'

    def unpools(self) -> bool:
        return len(self.layer.bottoms) == 2

    def strided(self) -> bool:
        p = self.params
        return p.type_name == "AtcUpsampleParameter" or any(
            p.has(name) for name in ("stride", "stride_h", "stride_w"))

    def multiplier(self) -> float:
        """What the stride variant multiplies its output by (1 for the others)."""
        p = self.params
        if not self.strided() or not p.has("scale"):
            return 1.0
        return float(p.scale)

    def scales(self) -> tuple[int, int]:
        p = self.params
        if self.strided():
            if self.unpools():
                raise self.fail("stride settings belong to the one-bottom Upsample (Huawei ATC)")
            if p.has("stride"):
                scale_h = scale_w = p.stride
            else:
                scale_h = p.stride_h if p.has("stride_h") else 2
                scale_w = p.stride_w if p.has("stride_w") else 2
        else:
            scale_h = p.scale_h if p.has("scale_h") else p.scale
            scale_w = p.scale_w if p.has("scale_w") else p.scale
        if scale_h <= 0 or scale_w <= 0:
            raise self.fail("scale factors must be positive")
        if p.type_name == "UpsampleParameter" and not self.unpools() and (
                p.has("upsample_h") or p.has("upsample_w") or p.pad_out_h or p.pad_out_w):
            raise self.fail("upsample_h/w and pad_out belong to SegNet's two-bottom Upsample")
        return scale_h, scale_w

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        p = self.params
        scale_h, scale_w = self.scales()
        if not self.unpools():
            return height * scale_h, width * scale_w
        if p.has("upsample_h") != p.has("upsample_w"):
            raise self.fail("give both upsample_h and upsample_w, or neither")
        if p.has("upsample_h"):
            return p.upsample_h, p.upsample_w
        return height * scale_h - int(p.pad_out_h), width * scale_w - int(p.pad_out_w)

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        if self.unpools() and tuple(shapes[1]) != shape:
            raise self.fail(f"the mask {list(shapes[1])} must have the data's shape {list(shape)}")
        return [shape[:-2] + self.out_size(*shape[-2:])]

    def values_needed(self, shapes):
        return 2 * prod(self.top_shapes(shapes)[0]) + 2 * prod(shapes[0])

    def forward(self, x, *mask):
        xp = self.xp
        (top,) = self.top_shapes([x.shape] + [m.shape for m in mask])
        if not self.unpools():
            scale_h, scale_w = self.scales()
            out = xp.repeat(xp.repeat(x, scale_h, axis=-2), scale_w, axis=-1)
            multiplier = self.multiplier()
            if multiplier != 1.0:
                out *= x.dtype.type(multiplier)
            return (out,)
        plane = top[-2] * top[-1]
        index = mask[0].reshape(x.shape[0] * x.shape[1], -1).astype(xp.int64)
        if index.size and (int(index.min()) < 0 or int(index.max()) >= plane):
            raise self.fail(f"a mask position is outside the {top[-2]}x{top[-1]} output (check that "
                            "the scale matches the pooling layer's)")
        out = xp.zeros((index.shape[0], plane), x.dtype)
        rows = xp.arange(index.shape[0])[:, None]
        out[rows, index] = x.reshape(index.shape)
        return (out.reshape(top),)


@register("Interp", settings="interp_param",
          key_settings=("height", "width", "zoom_factor", "shrink_factor", "pad_beg", "pad_end"))
class Interp(LayerOp):
    """PSPNet/DeepLab's bilinear resize with aligned corners (interp_layer.cpp,
    util/interp.cpp): the input cropped by pad_beg/pad_end (both <= 0), then
    resized to height x width, or by zoom_factor and/or shrink_factor."""

    origin = 'PSPNet / DeepLab'
    exactness = "the fork's loop in its float32 arithmetic"

    def region(self, shape) -> tuple[int, int, int, int]:
        """(first row and column of the input used, its height and width)."""
        p = self.params
        if p.pad_beg > 0 or p.pad_end > 0:
            raise self.fail("pad_beg and pad_end must be zero or negative (they crop)")
        height = shape[-2] + p.pad_beg + p.pad_end
        width = shape[-1] + p.pad_beg + p.pad_end
        if height <= 0 or width <= 0:
            raise self.fail("the padding removes the whole input")
        return -p.pad_beg, -p.pad_beg, height, width

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        p = self.params
        shrink, zoom = p.has("shrink_factor"), p.has("zoom_factor")
        if shrink and not zoom:
            return (height - 1) // p.shrink_factor + 1, (width - 1) // p.shrink_factor + 1
        if zoom and not shrink:
            return height + (height - 1) * (p.zoom_factor - 1), width + (width - 1) * (p.zoom_factor - 1)
        if p.has("height") and p.has("width"):
            return p.height, p.width
        if shrink and zoom:
            height, width = (height - 1) // p.shrink_factor + 1, (width - 1) // p.shrink_factor + 1
            return height + (height - 1) * (p.zoom_factor - 1), width + (width - 1) * (p.zoom_factor - 1)
        raise self.fail("needs height and width, or zoom_factor and/or shrink_factor")

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        return [shape[:-2] + self.out_size(*self.region(shape)[2:])]

    def values_needed(self, shapes):
        return 4 * prod(self.top_shapes(shapes)[0]) + prod(shapes[0])

    def _axis(self, size_in: int, size_out: int):
        """Source index, next-index step and weight per output position, in
        float32 as the fork computes them."""
        import numpy as np

        ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
        real = ratio * np.arange(size_out, dtype=np.float32)
        index = real.astype(np.int64)
        step = (index < size_in - 1).astype(np.int64)
        return index, step, real - index.astype(np.float32)

    def forward(self, x):
        xp = self.xp
        top, left, height, width = self.region(x.shape)
        region = x[..., top:top + height, left:left + width]
        out_h, out_w = self.out_size(height, width)
        if (out_h, out_w) == (height, width):
            return (xp.ascontiguousarray(region),)
        rows, row_step, row_weight = (xp.asarray(a) for a in self._axis(height, out_h))
        cols, col_step, col_weight = (xp.asarray(a) for a in self._axis(width, out_w))
        one = x.dtype.type(1)
        upper, lower = region[..., rows, :], region[..., rows + row_step, :]
        wh, ww = row_weight.astype(x.dtype)[:, None], col_weight.astype(x.dtype)
        upper = (one - ww) * upper[..., cols] + ww * upper[..., cols + col_step]
        lower = (one - ww) * lower[..., cols] + ww * lower[..., cols + col_step]
        return ((one - wh) * upper + wh * lower,)
