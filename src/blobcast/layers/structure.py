"""Layers that move, split, join, reshape or combine blobs (with the forks'
ShuffleChannel, Permute and Axpy), and the types carried through unchanged."""

from __future__ import annotations

from math import prod

import numpy as np

from . import compiled
from .base import LayerOp, canonical_axis, declare, register
from .compiled import run_in_place


@register("Split", tops=(1, None))
class Split(LayerOp):
    def forward(self, x):
        return tuple(x for _ in self.layer.tops)  # Caffe shares the data; so do we


@register("Silence", bottoms=(1, None), tops=(0, 0))
class Silence(LayerOp):
    def forward(self, *bottoms):
        return ()


@register("Concat", settings="concat_param", key_settings=("axis",), bottoms=(1, None))
class Concat(LayerOp):
    def _axis(self, ndim: int) -> int:
        p = self.params
        return canonical_axis(p.concat_dim if p.has("concat_dim") else p.axis, ndim)

    def top_shapes(self, shapes):
        axis = self._axis(len(shapes[0]))
        top = list(shapes[0])
        top[axis] = sum(shape[axis] for shape in shapes)
        return [tuple(top)]

    def forward(self, *bottoms):
        return (self.xp.concatenate(bottoms, axis=self._axis(bottoms[0].ndim)),)


@register("Slice", settings="slice_param", key_settings=("axis", "slice_point"), tops=(1, None))
class Slice(LayerOp):
    def bounds(self, shape) -> tuple[int, list[int]]:
        """(axis, [0, slice points..., size]) as SliceLayer::Reshape finds them."""
        p = self.params
        axis = canonical_axis(p.slice_dim if p.has("slice_dim") else p.axis, len(shape))
        count = len(self.layer.tops)
        points = list(p.slice_point)
        if points:
            if len(points) != count - 1:
                raise self.fail(f"{len(points)} slice points for {count} tops")
        else:
            if shape[axis] % count:
                raise self.fail(f"cannot split {shape[axis]} into {count} equal slices")
            step = shape[axis] // count
            points = [step * i for i in range(1, count)]
        return axis, [0, *points, shape[axis]]

    def top_shapes(self, shapes):
        axis, bounds = self.bounds(shapes[0])
        tops = []
        for start, stop in zip(bounds, bounds[1:]):
            top = list(shapes[0])
            top[axis] = stop - start
            tops.append(tuple(top))
        return tops

    def forward(self, x):
        axis, bounds = self.bounds(x.shape)
        index = [slice(None)] * x.ndim
        outputs = []
        for start, stop in zip(bounds, bounds[1:]):
            index[axis] = slice(start, stop)
            outputs.append(x[tuple(index)])
        return tuple(outputs)


@register("Flatten", settings="flatten_param", key_settings=("axis", "end_axis"))
class Flatten(LayerOp):
    def top_shapes(self, shapes):
        shape = tuple(shapes[0])
        start = canonical_axis(self.params.axis, len(shape))
        end = canonical_axis(self.params.end_axis, len(shape))
        return [shape[:start] + (prod(shape[start:end + 1]),) + shape[end + 1:]]

    def forward(self, x):
        return (x.reshape(self.top_shapes([x.shape])[0]),)


@register("Reshape", settings="reshape_param", key_settings=("shape",))
class Reshape(LayerOp):
    def top_shapes(self, shapes):
        """ReshapeLayer::Reshape: 0 copies an input axis, -1 is inferred, and
        axis/num_axes choose the span of input axes replaced."""
        p, shape = self.params, tuple(shapes[0])
        dims, ndim, size = list(p.shape.dim), len(shape), prod(shape)
        start = p.axis if p.axis >= 0 else p.axis + ndim + 1
        if not 0 <= start <= ndim:
            raise self.fail(f"axis {p.axis} is out of range")
        end = ndim if p.num_axes == -1 else start + p.num_axes
        if end > ndim:
            raise self.fail("axis + num_axes runs past the input's axes")
        top = list(shape[:start]) + dims + list(shape[end:])
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.fail("at most one dimension may be -1")
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= ndim:
                    raise self.fail("a 0 dimension has no input axis to copy")
                top[start + i] = shape[start + i]
        if inferred:
            known = prod(d for i, d in enumerate(top) if i != start + inferred[0])
            if known == 0 or size % known:
                raise self.fail(f"cannot infer -1 for {list(shape)} -> {dims}")
            top[start + inferred[0]] = size // known
        if prod(top) != size:
            raise self.fail(f"cannot reshape {list(shape)} to {top}")
        return [tuple(top)]

    def forward(self, x):
        return (x.reshape(self.top_shapes([x.shape])[0]),)


@register("Crop", settings="crop_param", key_settings=("axis", "offset"), bottoms=(2, 2))
class Crop(LayerOp):
    def top_shapes(self, shapes):
        shape, reference = tuple(shapes[0]), tuple(shapes[1])
        axis = canonical_axis(self.params.axis, len(shape))
        return [shape[:axis] + reference[axis:]]

    def forward(self, x, reference):
        axis = canonical_axis(self.params.axis, x.ndim)
        offsets = list(self.params.offset)
        cropped = x.ndim - axis
        if len(offsets) not in (0, 1, cropped):
            raise self.fail(f"{len(offsets)} offsets for {cropped} cropped axes")
        index = [slice(None)] * x.ndim
        for i in range(axis, x.ndim):
            offset = 0 if not offsets else (offsets[0] if len(offsets) == 1 else offsets[i - axis])
            if offset + reference.shape[i] > x.shape[i]:
                raise self.fail(f"crop of axis {i} runs past the input")
            index[i] = slice(offset, offset + reference.shape[i])
        return (x[tuple(index)],)


@register("Tile", settings="tile_param")
class Tile(LayerOp):
    def top_shapes(self, shapes):
        top = list(shapes[0])
        top[canonical_axis(self.params.axis, len(top))] *= self.params.tiles
        return [tuple(top)]

    def values_needed(self, shapes):
        return prod(shapes[0]) * (1 + max(self.params.tiles, 1))

    def forward(self, x):
        axis = canonical_axis(self.params.axis, x.ndim)
        reps = [1] * x.ndim
        reps[axis] = self.params.tiles
        return (self.xp.tile(x, reps),)


@register("Eltwise", settings="eltwise_param", key_settings=("operation", "coeff"),
          bottoms=(2, None))
class Eltwise(LayerOp):
    takes_steps = True

    def forward(self, *bottoms):
        return self.forward_with_steps([], *bottoms)

    def forward_with_steps(self, steps, *bottoms):
        """The in-place layers' steps after it (a residual block's ReLU)
        applied in the same pass where the compiled kernels take it."""
        if any(b.shape != bottoms[0].shape for b in bottoms):
            raise self.fail("all inputs must have the same shape")
        if self.params.operation == "SUM":
            coefficients = list(self.params.coeff) or [1.0] * len(bottoms)
            if len(coefficients) != len(bottoms):
                raise self.fail(f"{len(coefficients)} coefficients for {len(bottoms)} inputs")
            if self.xp is np and coefficients == [1.0, 1.0]:
                y = compiled.add(bottoms[0], bottoms[1], steps)  # the same sum, then the steps
                if y is not None:
                    return (y,)
            y = self._sum(bottoms, coefficients)
        else:
            y = self._product_or_max(bottoms)
        run_in_place(y, steps)
        return (y,)

    @staticmethod
    def _sum(bottoms, coefficients):
        dtype = bottoms[0].dtype.type
        y = bottoms[0] * dtype(coefficients[0]) if coefficients[0] != 1 else bottoms[0].copy()
        for coefficient, b in zip(coefficients[1:], bottoms[1:]):
            y += b if coefficient == 1 else b * dtype(coefficient)
        return y

    def _product_or_max(self, bottoms):
        xp, operation = self.xp, self.params.operation
        y = bottoms[0].copy()
        for b in bottoms[1:]:
            if operation == "PROD":
                y *= b
            else:
                xp.maximum(y, b, out=y)
        return y


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


# Read, written and carried through unchanged; the engine runs them only as
# plugins (Python) or not at all.
declare("Python", settings="python_param", key_settings=("module", "layer"), blobs=None)
declare("Parameter", settings="parameter_param", blobs=1)
for _name in ("Filter", "BatchReindex"):
    declare(_name)
declare("Im2col", settings="convolution_param")  # convolution's patches as columns
