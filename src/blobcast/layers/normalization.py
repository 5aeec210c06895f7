"""LRN, BatchNorm, Scale, Bias and MVN, and the forks' Normalize (SSD) and BN
(PSPNet, SegNet)."""

from __future__ import annotations

from math import prod

from .activation import same_type
from .base import LayerOp, canonical_axis, filler, given_filler, register
from .pooling import pool2d, pooled_size
from .steps import ADD, DIVIDE, MULTIPLY, SUBTRACT, Step


@register("LRN", settings="lrn_param", key_settings=("local_size", "alpha", "beta", "k", "norm_region"))
class LRN(LayerOp):
    def _padding(self, channels: int) -> tuple[int, int]:
        """Zero channels before and after the squares that a window can reach
        while it still covers a real channel: at most channels - 1 a side,
        however wide the window (windows of zeros alone add nothing)."""
        size = self.params.local_size
        half = (size - 1) // 2
        return min(half, channels - 1), min(size - half - 1, channels - 1)

    def values_needed(self, shapes):
        shape = shapes[0]
        if self.params.norm_region != "ACROSS_CHANNELS" or len(shape) < 2 or not shape[1]:
            return super().values_needed(shapes)
        count, channels = prod(shape), shape[1]
        padded = count // channels * (channels + sum(self._padding(channels)))
        return 6 * count + padded  # squares, padded squares, sum, scale, its power, top

    def forward(self, x):
        xp, p = self.xp, self.params
        size = p.local_size
        if size % 2 == 0:
            raise self.fail("local_size must be odd")
        alpha, beta = same_type(x, p.alpha), same_type(x, p.beta)
        if p.norm_region == "ACROSS_CHANNELS":
            # scale = k + alpha/size * sum of squares over a window of channels,
            # added in the window's order; only offsets that reach a real
            # channel are added (adding +0 changes no value), so a wide
            # window costs no more than 2 * channels passes
            half, channels = (size - 1) // 2, x.shape[1]
            before, after = self._padding(channels)
            squares = xp.pad(x * x, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
            total = xp.zeros_like(x)
            for offset in range(max(0, half - channels + 1), min(size, half + channels)):
                start = offset - half + before
                total += squares[:, start:start + channels]
            scale = same_type(x, p.k) + (alpha / same_type(x, size)) * total
        else:
            # Caffe builds WITHIN_CHANNEL from layers: square, AVE-pool (the
            # divisor counts padding), then power(shift 1, scale alpha).
            half = (size - 1) // 2
            height, width = x.shape[2:]
            out = (pooled_size(height, size, 1, half, True), pooled_size(width, size, 1, half, True))
            try:
                mean = pool2d(xp, x * x, "AVE", (size, size), (1, 1), (half, half), out)
            except ValueError as error:  # a window past the bound on passes
                raise self.fail(str(error)) from None
            scale = 1 + alpha * mean
        return (x * scale ** (-beta),)


def _channel_view(vector, ndim):
    return vector.reshape((1, -1) + (1,) * (ndim - 2)) if ndim > 1 else vector


@register("BatchNorm", settings="batch_norm_param", key_settings=("use_global_stats", "eps"), blobs=3,
          statistics=True)
class BatchNorm(LayerOp):
    def blob_shapes(self, shapes):
        channels = shapes[0][1] if len(shapes[0]) > 1 else 1
        return [(channels,), (channels,), (1,)]

    def blob_fillers(self):
        # Caffe starts from zeros, which divides by sqrt(eps); mean 0, variance 1
        # and factor 1 keep a shape check's values in range.
        return [filler(value=0.0), filler(value=1.0), filler(value=1.0)]

    def _uses_global_stats(self) -> bool:
        p = self.params
        return p.use_global_stats if p.has("use_global_stats") else self.phase == "TEST"

    def _stored_statistics(self, x):
        """The stored mean and variance, divided by the stored scale factor."""
        mean, variance, factor = self.weights
        factor = float(factor.reshape(-1)[0])
        factor = 0.0 if factor == 0 else 1.0 / factor
        return mean * same_type(x, factor), variance * same_type(x, factor)

    def forward(self, x):
        xp, p = self.xp, self.params
        eps = same_type(x, p.eps)
        if self._uses_global_stats():
            mean, variance = self._stored_statistics(x)
        else:
            axes = (0,) + tuple(range(2, x.ndim))
            mean = x.mean(axis=axes)
            variance = ((x - _channel_view(mean, x.ndim)) ** 2).mean(axis=axes)
        centered = x - _channel_view(mean, x.ndim)
        return (centered / xp.sqrt(_channel_view(variance, x.ndim) + eps),)

    def in_place(self, shape):
        # Batch statistics need the whole batch at once: only stored ones here.
        if not self._uses_global_stats() or len(shape) < 2 or self.weights[0].size != shape[1]:
            return None
        sample = self.xp.zeros((), self.weights[0].dtype)
        mean, variance = self._stored_statistics(sample)
        deviation = self.xp.sqrt(variance + same_type(sample, self.params.eps))
        return [Step(SUBTRACT, mean.reshape(-1)), Step(DIVIDE, deviation.reshape(-1))]


def _broadcast_over(values, x, axis: int):
    """values covers axes [axis, axis + values.ndim) of x; a 0-d value is a scalar."""
    if values.ndim == 0:
        return values
    if tuple(x.shape[axis:axis + values.ndim]) != tuple(values.shape):
        raise ValueError(f"shape {list(values.shape)} does not match axes {axis}.. of "
                         f"{list(x.shape)}")
    return values.reshape((1,) * axis + values.shape + (1,) * (x.ndim - axis - values.ndim))


class _Affine(LayerOp):
    @classmethod
    def blob_count(cls, layer) -> int:
        learned = int(len(layer.bottoms) == 1)
        return learned + int(layer.type == "Scale" and layer.spec.scale_param.bias_term)

    def blob_shapes(self, shapes):
        if len(shapes) > 1:  # Scale's bias covers the axes of the second bottom, the scale
            return [tuple(shapes[1])] * self.blob_count(self.layer)
        p, shape = self.params, tuple(shapes[0])
        axis = canonical_axis(p.axis, len(shape))
        end = len(shape) if p.num_axes == -1 else axis + p.num_axes
        return [shape[axis:end]] * self.blob_count(self.layer)

    def blob_fillers(self):
        p = self.params
        learned = [] if len(self.layer.bottoms) > 1 else [
            given_filler(p, "filler", filler(value=1.0 if self.layer.type == "Scale" else 0.0))]
        bias = [given_filler(p, "bias_filler", filler(value=0.0))] \
            if self.layer.type == "Scale" and p.bias_term else []
        return learned + bias

    """Scale and Bias: a second bottom or a learned blob, broadcast from `axis`."""

    def _per_channel(self, shape):
        """The learned blobs as vectors of one value per channel when they act
        on axis 1 of a blob of `shape` (or one value for all); else None."""
        if len(self.layer.bottoms) > 1 or len(shape) < 2:
            return None
        axis = canonical_axis(self.params.axis, len(shape))
        span = len(shape) - axis if self.params.num_axes == -1 else self.params.num_axes
        operands = []
        for blob in self.weights:
            if blob.size == 1 and (blob.ndim != span or blob.shape == tuple(shape[axis:axis + span])):
                operands.append(self.xp.broadcast_to(blob.reshape(()), (shape[1],)))
            elif axis == 1 and span == 1 and blob.size == shape[1]:
                operands.append(blob.reshape(shape[1]))
            else:
                return None
        return operands

    def _operand(self, x, bottoms, index: int, num_axes: int):
        axis = canonical_axis(self.params.axis, x.ndim) if x.ndim else 0
        if bottoms:
            values = bottoms[0]
        else:
            values = self.weights[index]
            span = x.ndim - axis if num_axes == -1 else num_axes
            if values.ndim != span and values.size == 1:
                values = values.reshape(())
            elif values.ndim != span:
                values = values.reshape(x.shape[axis:axis + span])
        try:
            return _broadcast_over(values, x, axis)
        except ValueError as error:
            raise self.fail(str(error)) from None


@register("Scale", settings="scale_param", key_settings=("axis", "num_axes", "bias_term"),
          bottoms=(1, 2))
class Scale(_Affine):
    def forward(self, x, *bottoms):
        scale = self._operand(x, bottoms, 0, self.params.num_axes)
        y = x * scale
        if self.params.bias_term:
            bias_index = 0 if bottoms else 1
            bias = self.weights[bias_index]
            y = y + self._bias_shape(bias, scale, x)
        return (y,)

    def in_place(self, shape):
        operands = self._per_channel(shape)
        if operands is None:
            return None
        steps = [Step(MULTIPLY, operands[0])]
        return steps + [Step(ADD, operands[1])] if self.params.bias_term else steps

    def _bias_shape(self, bias, scale, x):
        return bias.reshape(scale.shape) if scale.ndim else bias.reshape(())


@register("Bias", settings="bias_param", bottoms=(1, 2))
class Bias(_Affine):
    def forward(self, x, *bottoms):
        return (x + self._operand(x, bottoms, 0, self.params.num_axes),)

    def in_place(self, shape):
        operands = self._per_channel(shape)
        return None if operands is None else [Step(ADD, operands[0])]


@register("MVN", settings="mvn_param")
class MVN(LayerOp):
    def forward(self, x):
        xp, p = self.xp, self.params
        axes = tuple(range(1 if p.across_channels else 2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        y = x - mean
        if p.normalize_variance:
            # Caffe: var = E[x^2] - E[x]^2, then divide by sqrt(var) + eps.
            variance = (x * x).mean(axis=axes, keepdims=True) - mean * mean
            y = y / (xp.sqrt(variance) + same_type(x, p.eps))
        return (y,)


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
        norm = xp.sqrt((x * x).sum(axis=axes, keepdims=True) + same_type(x, p.eps))
        scale = self.weights[0]
        if not p.channel_shared:
            scale = scale.reshape((1, -1) + (1,) * (x.ndim - 2))
        return ((x / norm) * scale.astype(x.dtype),)


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
