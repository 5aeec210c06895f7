"""Element-wise layers, with the formulas of Caffe's CPU implementations."""

from __future__ import annotations

import math

from .base import LayerOp, filler, given_filler, register
from .steps import CLIP, MULTIPLY, RELU, Step


def _sigmoid(xp, x):
    return 0.5 * xp.tanh(0.5 * x) + 0.5  # Caffe's sigmoid, free of exp overflow


def same_type(x, value):
    return x.dtype.type(value)


@register("ReLU", settings="relu_param", key_settings=("negative_slope",))
class ReLU(LayerOp):
    def forward(self, x):
        slope = self.params.negative_slope
        y = self.xp.maximum(x, 0)
        if slope:
            y = y + same_type(x, slope) * self.xp.minimum(x, 0)
        return (y,)

    def in_place(self, shape):
        return [Step(RELU, float(self.params.negative_slope))]


@register("PReLU", settings="prelu_param", blobs=1)
class PReLU(LayerOp):
    def blob_shapes(self, shapes):
        return [() if self.params.channel_shared else (shapes[0][1],)]

    def blob_fillers(self):
        return [given_filler(self.params, "filler", filler(value=0.25))]

    def forward(self, x):
        slope = self.weights[0]
        if not self.params.channel_shared:
            channels = x.shape[1] if x.ndim > 1 else 1
            if slope.size != channels:
                raise self.fail(f"{slope.size} slopes for {channels} channels")
            slope = slope.reshape((1, channels) + (1,) * (x.ndim - 2)) if x.ndim > 1 else slope
        else:
            slope = slope.reshape(())
        return (self.xp.maximum(x, 0) + slope * self.xp.minimum(x, 0),)


@register("ELU", settings="elu_param", key_settings=("alpha",))
class ELU(LayerOp):
    def forward(self, x):
        xp = self.xp
        alpha = same_type(x, self.params.alpha)
        return (xp.maximum(x, 0) + alpha * (xp.exp(xp.minimum(x, 0)) - 1),)


@register("Sigmoid", settings="sigmoid_param")
class Sigmoid(LayerOp):
    def forward(self, x):
        return (_sigmoid(self.xp, x),)


@register("TanH", settings="tanh_param")
class TanH(LayerOp):
    def forward(self, x):
        return (self.xp.tanh(x),)


@register("AbsVal")
class AbsVal(LayerOp):
    def forward(self, x):
        return (self.xp.abs(x),)


@register("Power", settings="power_param", key_settings=("power", "scale", "shift"))
class Power(LayerOp):
    def forward(self, x):
        p = self.params
        power, scale, shift = same_type(x, p.power), same_type(x, p.scale), same_type(x, p.shift)
        if power * scale == 0:  # the input does not matter (PowerLayer::Forward_cpu)
            value = 1 if power == 0 else shift ** power
            return (self.xp.full(x.shape, value, dtype=x.dtype),)
        y = x
        if scale != 1:
            y = y * scale
        if shift != 0:
            y = y + shift
        if power != 1:
            y = y ** power
        return (y if y is not x else x.copy(),)


def _check_base(base: float) -> None:
    if base != -1 and base <= 0:
        raise ValueError("base must be positive (or -1 for e)")


def exp_factors(params) -> tuple[float, float]:
    """ExpLayer's inner and outer scale: y = outer * exp(inner * x)."""
    _check_base(params.base)
    log_base = 1.0 if params.base == -1 else math.log(params.base)
    if params.shift == 0:
        outer = 1.0
    else:
        outer = math.exp(params.shift) if params.base == -1 else params.base ** params.shift
    return log_base * params.scale, outer


def log_factor(params) -> float:
    """LogLayer's base scale: y = factor * ln(scale * x + shift)."""
    _check_base(params.base)
    return 1.0 if params.base == -1 else 1.0 / math.log(params.base)


@register("Exp", settings="exp_param")
class Exp(LayerOp):
    def forward(self, x):
        try:
            inner, outer = exp_factors(self.params)
        except ValueError as error:
            raise self.fail(str(error)) from None
        inner = same_type(x, inner)
        y = self.xp.exp(x if inner == 1 else inner * x)
        if outer != 1:
            y = y * same_type(x, outer)
        return (y,)


@register("Log", settings="log_param")
class Log(LayerOp):
    def forward(self, x):
        p = self.params
        try:
            base_scale = log_factor(p)
        except ValueError as error:
            raise self.fail(str(error)) from None
        y = x if (p.scale == 1 and p.shift == 0) else x * same_type(x, p.scale) + same_type(x, p.shift)
        y = self.xp.log(y)
        if base_scale != 1:
            y = y * same_type(x, base_scale)
        return (y,)


@register("BNLL")
class BNLL(LayerOp):
    def forward(self, x):
        xp = self.xp
        positive = x + xp.log1p(xp.exp(-xp.abs(x)))
        return (xp.where(x > 0, positive, xp.log1p(xp.exp(xp.minimum(x, 0)))),)


@register("Threshold", settings="threshold_param")
class Threshold(LayerOp):
    def forward(self, x):
        return ((x > same_type(x, self.params.threshold)).astype(x.dtype),)


@register("Clip", settings="clip_param")
class Clip(LayerOp):
    def forward(self, x):
        p = self.params
        if not (p.has("min") and p.has("max")):
            raise self.fail("clip_param needs both min and max")
        return (self.xp.clip(x, same_type(x, p.min), same_type(x, p.max)),)


@register("Swish", settings="swish_param")
class Swish(LayerOp):
    def forward(self, x):
        return (x * _sigmoid(self.xp, same_type(x, self.params.beta) * x),)


@register("Dropout", settings="dropout_param", key_settings=("dropout_ratio", "scale_train"))
class Dropout(LayerOp):
    """TEST: the identity, as Caffe scales by 1 / (1 - ratio) while training.
    caffe-fast-rcnn's scale_train: false (its ZF nets) scales at test time
    instead: x * (1 / scale) with scale = 1 / (1 - ratio) held as a float."""

    def test_factor(self):
        """None for the identity, else the multiplier as the fork computes it."""
        p = self.params
        if p.scale_train:
            return None
        import numpy as np

        scale = np.float32(1.0 / (1.0 - float(np.float32(p.dropout_ratio))))
        return np.float32(1.0 / float(scale))

    def forward(self, x):
        if self.phase == "TRAIN":
            raise self.fail("Dropout runs only in the TEST phase here (it is random in training)")
        factor = self.test_factor()
        return (x,) if factor is None else (x * x.dtype.type(factor),)

    def in_place(self, shape):
        if self.phase == "TRAIN":
            return None
        factor = self.test_factor()
        return [] if factor is None else [Step(MULTIPLY, float(factor))]


@register("ReLU6")
class ReLU6(LayerOp):
    """y = min(max(x, 0), 6) (the forks' relu6_layer.cpp)."""

    origin = 'MobileNet forks'

    def forward(self, x):
        return (self.xp.clip(x, 0, same_type(x, 6)),)

    def in_place(self, shape):
        return [Step(CLIP, 0.0, 6.0)]
