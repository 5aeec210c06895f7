"""Layers of popular Caffe forks, with each fork's semantics.

ReLU6 and depthwise convolutions (MobileNet forks), ShuffleChannel
(ShuffleNet), Permute and Normalize (SSD, weiliu89/caffe), Axpy (SENet) and
the YOLO forks' nearest-neighbour Upsample. Field numbers are those of the
forks, as proto/caffe.proto declares them.
"""

from __future__ import annotations

from math import prod

from .activation import _const
from .base import LayerOp, filler, given_filler, register


@register("ReLU6")
class ReLU6(LayerOp):
    """y = min(max(x, 0), 6) (the forks' relu6_layer.cpp)."""

    origin = 'MobileNet forks'

    def forward(self, x):
        return (self.xp.clip(x, 0, _const(x, 6)),)

    def in_place(self, shape):
        return lambda x, channels: self.xp.clip(x, 0, _const(x, 6), out=x)


@register("ShuffleChannel", settings="shuffle_channel_param", key_settings=("group",))
class ShuffleChannel(LayerOp):
    """Channels split into `group` groups and interleaved: out channel j*G + i
    is in channel i*(C/G) + j (ShuffleNet's shuffle_channel_layer.cpp)."""

    origin = 'ShuffleNet (farmingyard)'

    def _groups(self, shape) -> int:
        group = self.params.group
        if group <= 0 or len(shape) < 2 or shape[1] % group:
            raise self.fail(f"{shape[1] if len(shape) > 1 else 0} channels do not split into "
                            f"{group} groups")
        return group

    def top_shapes(self, shapes):
        self._groups(shapes[0])
        return [tuple(shapes[0])]

    def forward(self, x):
        group = self._groups(x.shape)
        n, c = x.shape[:2]
        grouped = x.reshape((n, group, c // group) + x.shape[2:])
        return (self.xp.ascontiguousarray(self.xp.swapaxes(grouped, 1, 2)).reshape(x.shape),)


@register("Permute", settings="permute_param", key_settings=("order",))
class Permute(LayerOp):
    """np.transpose with the given order, the axes it leaves out appended in
    ascending order (SSD's permute_layer.cpp)."""

    origin = 'SSD (weiliu89)'

    def order(self, ndim: int) -> list[int]:
        order = []
        for axis in self.params.order:
            if axis >= ndim:
                raise self.fail(f"order names axis {axis} of a {ndim}-axis blob")
            if axis in order:
                raise self.fail(f"order repeats axis {axis}")
            order.append(axis)
        return order + [axis for axis in range(ndim) if axis not in order]

    def top_shapes(self, shapes):
        return [tuple(shapes[0][axis] for axis in self.order(len(shapes[0])))]

    def forward(self, x):
        return (self.xp.ascontiguousarray(self.xp.transpose(x, self.order(x.ndim))),)


@register("Normalize", settings="norm_param", key_settings=("across_spatial", "channel_shared", "eps"),
          blobs=1)
class Normalize(LayerOp):
    """L2 normalisation with eps inside the square root, then a learned scale
    (SSD's normalize_layer.cpp): across_spatial divides by the norm over
    C, H, W of each sample, otherwise by the norm over C at each position."""

    origin = 'SSD (weiliu89)'

    def blob_shapes(self, shapes):
        return [() if self.params.channel_shared else (shapes[0][1],)]

    def blob_fillers(self):
        return [given_filler(self.params, "scale_filler", filler(value=1.0))]

    def forward(self, x):
        xp, p = self.xp, self.params
        axes = tuple(range(1, x.ndim)) if p.across_spatial else (1,)
        norm = xp.sqrt((x * x).sum(axis=axes, keepdims=True) + _const(x, p.eps))
        scale = self.weights[0]
        if not p.channel_shared:
            scale = scale.reshape((1, -1) + (1,) * (x.ndim - 2))
        return ((x / norm) * scale.astype(x.dtype),)


@register("Axpy", bottoms=(3, 3))
class Axpy(LayerOp):
    """F = a * X + Y with a of shape N x C (x 1 x 1), as SENet's axpy_layer.cpp
    computes it: bottoms a, X, Y. (OpenCV's importer swaps X and Y.)"""

    origin = 'SENet (hujie-frank)'
    exactness = "SENet's a·X + Y (OpenCV's importer swaps X and Y)"

    def top_shapes(self, shapes):
        a, x, y = (tuple(shape) for shape in shapes)
        if x != y or a[:2] != x[:2] or prod(a) != a[0] * a[1]:
            raise self.fail(f"takes a [N, C(, 1, 1)] scale and two equal blobs, got "
                            f"{list(a)}, {list(x)}, {list(y)}")
        return [x]

    def forward(self, a, x, y):
        self.top_shapes([a.shape, x.shape, y.shape])
        scale = a.reshape(a.shape[:2] + (1,) * (x.ndim - 2))
        return (scale * x + y,)


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


@register("PriorBox", settings="prior_box_param",
          key_settings=("min_size", "max_size", "aspect_ratio", "flip", "clip", "step"), bottoms=(2, 2))
class PriorBox(LayerOp):
    """SSD's default boxes (weiliu89 prior_box_layer.cpp), which depend on the
    shapes alone: top [1, 2, H*W*priors*4], channel 0 the boxes as
    (xmin, ymin, xmax, ymax) over the image size, channel 1 the variances."""

    origin = 'SSD (weiliu89)'
    exactness = "bit for bit the SSD fork's output, in its float32 arithmetic"

    def aspect_ratios(self) -> list[float]:
        """[1, each given ratio not already there, its inverse with flip], as
        the fork keeps them: float32 values, 1/ar computed in double."""
        import math

        import numpy as np

        def bucket(value: float):  # 1e-6 wide: a value within 1e-6 lies in a neighbouring one
            return math.floor(value * 1e6) if math.isfinite(value) else value

        def seen(value: float) -> bool:
            near = (bucket(value) + step for step in (-1, 0, 1)) if math.isfinite(value) else [value]
            return any(abs(value - other) < 1e-6 for b in near for other in known.get(b, ()))

        ratios = [np.float32(1.0)]
        known: dict = {bucket(1.0): [1.0]}
        for ratio in self.params.aspect_ratio:
            ratio = np.float32(ratio)
            if seen(float(ratio)):
                continue
            added = [ratio]
            if self.params.flip:
                with np.errstate(divide="ignore"):  # 1/0: inf, as the fork's 1./ar
                    added.append(np.float32(np.float64(1.0) / np.float64(ratio)))
            ratios += added
            for value in map(float, added):
                known.setdefault(bucket(value), []).append(value)
        return ratios

    def _checked(self):
        p = self.params
        if not p.min_size:
            raise self.fail("needs a min_size")
        if any(size <= 0 for size in p.min_size) or any(ratio <= 0 for ratio in p.aspect_ratio):
            raise self.fail("every min_size and aspect_ratio must be positive")
        if p.max_size and len(p.max_size) != len(p.min_size):
            raise self.fail("needs as many max_size as min_size values")
        if any(top <= bottom for bottom, top in zip(p.min_size, p.max_size)):
            raise self.fail("every max_size must be greater than its min_size")
        if len(p.variance) not in (0, 1, 4):
            raise self.fail(f"takes 1 or 4 variances, not {len(p.variance)}")
        return p

    def priors_per_location(self) -> int:
        p = self._checked()
        return len(self.aspect_ratios()) * len(p.min_size) + len(p.max_size)

    def top_shapes(self, shapes):
        height, width = shapes[0][2:4]
        return [(1, 2, height * width * self.priors_per_location() * 4)]

    def values_needed(self, shapes):
        """The priors come from the settings, not the bottoms: at the peak,
        the corners in float64 (as many bytes as the top) beside the boxes,
        the variances and their stack (about 2.8 times the top, measured)."""
        (top,) = self.top_shapes(shapes)
        return 3 * prod(top) + sum(prod(shape) for shape in shapes)

    def boxes(self, feature_shape, image_shape):
        """The prior boxes and variances as NumPy float32 arrays, [priors, 4] each."""
        import numpy as np

        p = self._checked()
        height, width = feature_shape[2:4]
        if p.has("img_h") or p.has("img_w"):
            image_h, image_w = p.img_h, p.img_w
        elif p.has("img_size"):
            image_h = image_w = p.img_size
        else:
            image_h, image_w = image_shape[2:4]
        # The fork's arithmetic: steps, centres and box sizes in float32, each
        # coordinate (centre - size / 2.) / image size in double, stored as float.
        f32 = np.float32
        if p.has("step_h") or p.has("step_w"):
            step_h, step_w = f32(p.step_h), f32(p.step_w)
        elif p.has("step"):
            step_h = step_w = f32(p.step)
        else:
            step_h, step_w = f32(image_h) / f32(height), f32(image_w) / f32(width)
        sizes = []  # (width, height) per prior at a location, in the fork's order
        ratios = self.aspect_ratios()
        for index, minimum in enumerate(p.min_size):
            minimum = int(minimum)  # the fork truncates: int min_size_ = min_sizes_[s]
            sizes.append((f32(minimum), f32(minimum)))
            if p.max_size:
                side = f32(np.sqrt(float(minimum * int(p.max_size[index]))))
                sizes.append((side, side))
            for ratio in ratios:
                if abs(float(ratio) - 1.0) < 1e-6:
                    continue
                root = np.sqrt(ratio)  # float32, as sqrt of a float
                sizes.append((f32(minimum) * root, f32(minimum) / root))
        sizes = np.asarray(sizes, np.float32).astype(np.float64)
        offset = f32(p.offset)
        centre_x = ((np.arange(width, dtype=np.float32) + offset) * step_w).astype(np.float64)
        centre_y = ((np.arange(height, dtype=np.float32) + offset) * step_h).astype(np.float64)
        cy, cx = np.meshgrid(centre_y, centre_x, indexing="ij")
        cx, cy = cx[..., None], cy[..., None]
        half_w, half_h = sizes[:, 0] / 2.0, sizes[:, 1] / 2.0
        boxes = np.stack([(cx - half_w) / image_w, (cy - half_h) / image_h,
                          (cx + half_w) / image_w, (cy + half_h) / image_h], axis=-1).reshape(-1, 4)
        boxes = boxes.astype(np.float32)
        if p.clip:
            boxes = np.clip(boxes, np.float32(0), np.float32(1))
        variance = list(p.variance) or [0.1]
        variances = np.tile(np.asarray(variance * (4 // len(variance)), np.float32), (len(boxes), 1))
        return boxes, variances

    def forward(self, feature, image):
        boxes, variances = self.boxes(feature.shape, image.shape)
        top = self.xp.asarray(self.xp.stack([self.xp.asarray(boxes.reshape(-1)),
                                             self.xp.asarray(variances.reshape(-1))]))
        return (top.reshape((1, 2, -1)).astype(feature.dtype),)


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


_SEGNET_BN_FIELDS = ("scale_filler", "shift_filler", "bn_mode")


@register("BN", settings="bn_param", key_settings=("frozen", "eps", "bn_mode"), blobs=None,
          tops=(1, 3))
class BN(LayerOp):
    """Two forks' batch normalisation under one type name, told apart by their
    settings (or, without any, by the blobs a weights file holds):

    PSPNet/DeepLab (hszhao/PSPNet bn_layer.cpp): blobs slope, bias, running
    mean, running variance (1 x C x 1 x 1 each). At TEST, or when `frozen`:
    y = (x - mean) * (var + eps)^-0.5 * slope + bias, in that order; in TRAIN
    the batch's mean and (biased) variance over N, H, W replace the running ones.

    SegNet/ENet (caffe-segnet bn_layer.cpp): blobs scale and shift. bn_mode
    INFERENCE: y = x * scale + shift (the statistics were folded into them);
    LEARN, in any phase: the batch's mean and E(x^2) - mean^2, then
    (x - mean) / sqrt(var + 1e-9) * scale + shift. Tops 2 and 3 (LEARN): the
    batch mean and variance, 1 x C x 1 x 1."""

    origin = "PSPNet / DeepLab (hszhao/PSPNet); SegNet / ENet (caffe-segnet)"

    @classmethod
    def segnet(cls, layer) -> bool:
        p = layer.spec.settings("bn_param") if layer.spec.has("bn_param") else None
        if p is not None and (p.type_name == "SegNetBNParameter"
                              or any(p.has(name) for name in _SEGNET_BN_FIELDS)):
            return True
        if p is not None and p.to_dict():
            return False
        return len(layer.blobs) == 2

    @classmethod
    def blob_count(cls, layer) -> int:
        return 2 if cls.segnet(layer) else 4

    def setup(self):
        self.is_segnet = self.segnet(self.layer)
        self.learn = self.is_segnet and self.params.bn_mode != "INFERENCE"
        if not self.is_segnet and len(self.layer.tops) != 1:
            raise self.fail("PSPNet's BN has one top")

    def blob_shapes(self, shapes):
        return [(1, shapes[0][1], 1, 1)] * self.blob_count(self.layer)

    def blob_fillers(self):
        p = self.params
        if self.is_segnet:
            return [given_filler(p, "scale_filler", filler()), given_filler(p, "shift_filler", filler())]
        return [given_filler(p, "slope_filler", filler()), given_filler(p, "bias_filler", filler()),
                filler(value=0.0), filler(value=1.0 if p.frozen else 0.0)]

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        return [shape] + [(1, shape[1], 1, 1)] * (len(self.layer.tops) - 1)

    def batch_statistics(self) -> bool:
        if self.is_segnet:
            return self.learn
        return self.phase == "TRAIN" and not self.params.frozen

    def _per_channel(self, values, ndim: int):
        return values.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x):
        xp = self.xp
        if x.ndim < 2:
            raise self.fail(f"takes an N x C (x H x W) blob, not {list(x.shape)}")
        axes = (0,) + tuple(range(2, x.ndim))
        scale, shift = (self._per_channel(w.astype(x.dtype), x.ndim) for w in self.weights[:2])
        if self.is_segnet and not self.learn:
            return (x * scale + shift,)
        if self.batch_statistics():
            mean = x.mean(axis=axes, keepdims=True)
            if self.is_segnet:
                variance = (x * x).mean(axis=axes, keepdims=True) - mean * mean
            else:
                variance = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        else:
            mean, variance = (self._per_channel(w.astype(x.dtype), x.ndim) for w in self.weights[2:4])
        if self.is_segnet:
            centred = (x - mean) / xp.sqrt(variance + x.dtype.type(1e-9))
            out = centred * scale + shift
            return (out,) + tuple(s.reshape(1, -1, 1, 1) for s in (mean, variance))[
                :len(self.layer.tops) - 1]
        inverse = xp.power(variance + x.dtype.type(self.params.eps), x.dtype.type(-0.5))
        return (((x - mean) * inverse) * scale + shift,)


__all__ = ["ReLU6", "ShuffleChannel", "Permute", "Normalize", "Axpy", "Upsample", "PriorBox", "Interp",
           "BN"]
