"""InnerProduct, Embed, Softmax, ArgMax, Reduction; the recurrent types,
read and written but not run."""

from __future__ import annotations

from math import prod

import numpy as np

from ..threads import matmul
from .base import LayerOp, canonical_axis, declare, register, weight_and_bias_fillers


@register("InnerProduct", settings="inner_product_param", key_settings=(
    "num_output", "bias_term", "axis", "transpose"))
class InnerProduct(LayerOp):
    @classmethod
    def blob_count(cls, layer) -> int:
        return 1 + int(layer.spec.inner_product_param.bias_term)

    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        return [shape[:canonical_axis(self.params.axis, len(shape))] + (self.params.num_output,)]

    def blob_shapes(self, shapes):
        p, shape = self.params, tuple(shapes[0])
        depth = prod(shape[canonical_axis(p.axis, len(shape)):])
        weight = (depth, p.num_output) if p.transpose else (p.num_output, depth)
        return [weight] + ([(p.num_output,)] if p.bias_term else [])

    def blob_fillers(self):
        return weight_and_bias_fillers(self.params)

    def values_needed(self, shapes):
        p, shape = self.params, shapes[0]
        rows = prod(shape[:canonical_axis(p.axis, len(shape))])
        return 2 * rows * p.num_output + prod(shape)

    def forward(self, x):
        p = self.params
        axis = canonical_axis(p.axis, x.ndim)
        rows, depth = prod(x.shape[:axis]), prod(x.shape[axis:])
        weight = self.weights[0]
        if weight.ndim != 2:
            weight = weight.reshape(-1, depth) if not p.transpose else weight.reshape(depth, -1)
        expected = weight.shape[0] if p.transpose else weight.shape[1]
        if expected != depth:
            raise self.fail(f"weights {list(weight.shape)} do not fit an input of "
                            f"{depth} values per row")
        y = matmul(x.reshape(rows, depth), weight if p.transpose else weight.T) \
            if self.xp is np else x.reshape(rows, depth) @ (weight if p.transpose else weight.T)
        if p.bias_term:
            y += self.weights[1].reshape(1, -1)
        return (y.reshape(x.shape[:axis] + (y.shape[1],)),)


@register("Embed", settings="embed_param")
class Embed(LayerOp):
    @classmethod
    def blob_count(cls, layer) -> int:
        return 1 + int(layer.spec.embed_param.bias_term)

    def top_shapes(self, shapes):
        return [tuple(shapes[0]) + (self.params.num_output,)]

    def blob_shapes(self, shapes):
        p = self.params
        return [(p.input_dim, p.num_output)] + ([(p.num_output,)] if p.bias_term else [])

    def blob_fillers(self):
        return weight_and_bias_fillers(self.params)

    def values_needed(self, shapes):
        return 3 * prod(shapes[0]) * (1 + self.params.num_output)

    def forward(self, x):
        xp, p = self.xp, self.params
        indices = x.astype(xp.int64)
        if xp.any(indices != x) or xp.any(indices < 0) or xp.any(indices >= p.input_dim):
            raise self.fail(f"inputs must be whole numbers in [0, {p.input_dim})")
        y = self.weights[0].reshape(p.input_dim, -1)[indices]
        if p.bias_term:
            y = y + self.weights[1].reshape(-1)
        return (y,)


@register("Softmax", settings="softmax_param", key_settings=("axis",))
class Softmax(LayerOp):
    def forward(self, x):
        xp = self.xp
        axis = canonical_axis(self.params.axis, x.ndim)
        shifted = xp.exp(x - x.max(axis=axis, keepdims=True))
        return (shifted / shifted.sum(axis=axis, keepdims=True),)


@register("ArgMax", settings="argmax_param")
class ArgMax(LayerOp):
    def top_shapes(self, shapes):
        shape, p = list(shapes[0]), self.params
        if p.has("axis"):
            shape[canonical_axis(p.axis, len(shape))] = p.top_k
            return [tuple(shape)]
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], 2 if p.out_max_val else 1, p.top_k
        return [tuple(top)]

    def forward(self, x):
        xp, p = self.xp, self.params
        k = p.top_k
        if p.has("axis"):
            axis = canonical_axis(p.axis, x.ndim)
            if k > x.shape[axis]:
                raise self.fail(f"top_k {k} exceeds the axis size {x.shape[axis]}")
            order = self._descending(x, axis)[..., :k]
            order = xp.moveaxis(order, -1, axis)
            if p.out_max_val:
                return (xp.take_along_axis(x, order, axis=axis),)
            return (order.astype(x.dtype),)
        flat = x.reshape(x.shape[0], -1)
        if k > flat.shape[1]:
            raise self.fail(f"top_k {k} exceeds the {flat.shape[1]} values per item")
        order = self._descending(flat, 1)[:, :k]
        shape = [1] * max(x.ndim, 3)
        shape[0], shape[2] = x.shape[0], k
        if p.out_max_val:
            shape[1] = 2
            values = xp.take_along_axis(flat, order, axis=1)
            return (xp.stack([order.astype(x.dtype), values], axis=1).reshape(shape),)
        return (order.astype(x.dtype).reshape(shape),)

    def _descending(self, x, axis):
        """Indices by value, largest first; ties put the larger index first, as
        Caffe's partial_sort of (value, index) pairs with std::greater does."""
        moved = self.xp.moveaxis(x, axis, -1)
        # (value, index) descending is (value, index) ascending, reversed.
        return self.xp.argsort(moved, axis=-1, kind="stable")[..., ::-1]


@register("Reduction", settings="reduction_param")
class Reduction(LayerOp):
    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        return [shape[:canonical_axis(self.params.axis, len(shape)) if shape else 0]]

    def forward(self, x):
        xp, p = self.xp, self.params
        axis = canonical_axis(p.axis, x.ndim) if x.ndim else 0
        tail = tuple(range(axis, x.ndim))
        operation = p.operation
        if operation == "SUM":
            y = x.sum(axis=tail)
        elif operation == "ASUM":
            y = xp.abs(x).sum(axis=tail)
        elif operation == "SUMSQ":
            y = (x * x).sum(axis=tail)
        else:
            y = x.sum(axis=tail) / x.dtype.type(prod(x.shape[axis:]))
        coefficient = x.dtype.type(p.coeff)
        return (xp.asarray(y * coefficient if coefficient != 1 else y, dtype=x.dtype),)



# Recurrent layers: read and written, not run.
declare("Recurrent", settings="recurrent_param", blobs=None,
        origin="BVLC Caffe (the base class of RNN and LSTM)")
for _name in ("RNN", "LSTM"):
    declare(_name, settings="recurrent_param", blobs=None)
