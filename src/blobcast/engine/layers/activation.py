"""Element-wise layers, with the formulas of Caffe's CPU implementations."""

from __future__ import annotations

import math

from ..registry import LayerOp, register


def _sigmoid(xp, x):
    return 0.5 * xp.tanh(0.5 * x) + 0.5  # Caffe's sigmoid, free of exp overflow


def _const(x, value):
    return x.dtype.type(value)


@register("ReLU")
class ReLU(LayerOp):
    def forward(self, x):
        slope = self.params.negative_slope
        y = self.xp.maximum(x, 0)
        if slope:
            y = y + _const(x, slope) * self.xp.minimum(x, 0)
        return (y,)


@register("PReLU")
class PReLU(LayerOp):
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


@register("ELU")
class ELU(LayerOp):
    def forward(self, x):
        xp = self.xp
        alpha = _const(x, self.params.alpha)
        return (xp.maximum(x, 0) + alpha * (xp.exp(xp.minimum(x, 0)) - 1),)


@register("Sigmoid")
class Sigmoid(LayerOp):
    def forward(self, x):
        return (_sigmoid(self.xp, x),)


@register("TanH")
class TanH(LayerOp):
    def forward(self, x):
        return (self.xp.tanh(x),)


@register("AbsVal")
class AbsVal(LayerOp):
    def forward(self, x):
        return (self.xp.abs(x),)


@register("Power")
class Power(LayerOp):
    def forward(self, x):
        p = self.params
        power, scale, shift = _const(x, p.power), _const(x, p.scale), _const(x, p.shift)
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


@register("Exp")
class Exp(LayerOp):
    def forward(self, x):
        p = self.params
        if p.base != -1 and p.base <= 0:
            raise self.fail("base must be positive (or -1 for e)")
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        inner = _const(x, log_base * p.scale)
        if p.shift == 0:
            outer = 1.0
        else:
            outer = math.exp(p.shift) if p.base == -1 else p.base ** p.shift
        y = self.xp.exp(x if inner == 1 else inner * x)
        if outer != 1:
            y = y * _const(x, outer)
        return (y,)


@register("Log")
class Log(LayerOp):
    def forward(self, x):
        p = self.params
        if p.base != -1 and p.base <= 0:
            raise self.fail("base must be positive (or -1 for e)")
        base_scale = 1.0 if p.base == -1 else 1.0 / math.log(p.base)
        y = x if (p.scale == 1 and p.shift == 0) else x * _const(x, p.scale) + _const(x, p.shift)
        y = self.xp.log(y)
        if base_scale != 1:
            y = y * _const(x, base_scale)
        return (y,)


@register("BNLL")
class BNLL(LayerOp):
    def forward(self, x):
        xp = self.xp
        positive = x + xp.log1p(xp.exp(-xp.abs(x)))
        return (xp.where(x > 0, positive, xp.log1p(xp.exp(xp.minimum(x, 0)))),)


@register("Threshold")
class Threshold(LayerOp):
    def forward(self, x):
        return ((x > _const(x, self.params.threshold)).astype(x.dtype),)


@register("Clip")
class Clip(LayerOp):
    def forward(self, x):
        p = self.params
        if not (p.has("min") and p.has("max")):
            raise self.fail("clip_param needs both min and max")
        return (self.xp.clip(x, _const(x, p.min), _const(x, p.max)),)


@register("Swish")
class Swish(LayerOp):
    def forward(self, x):
        return (x * _sigmoid(self.xp, _const(x, self.params.beta) * x),)


@register("Dropout")
class Dropout(LayerOp):
    def forward(self, x):
        if self.phase == "TRAIN":
            raise self.fail("Dropout runs only in the TEST phase here (it is random in training)")
        return (x,)  # Caffe scales at training time, so testing is the identity
