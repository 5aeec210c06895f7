"""Layers that move, split, join or reshape blobs."""

from __future__ import annotations

from math import prod

from .base import LayerOp, canonical_axis, register


@register("Split")
class Split(LayerOp):
    def forward(self, x):
        return tuple(x for _ in self.layer.tops)  # Caffe shares the data; so do we


@register("Silence")
class Silence(LayerOp):
    def forward(self, *bottoms):
        return ()


@register("Concat")
class Concat(LayerOp):
    def forward(self, *bottoms):
        p = self.params
        axis = p.concat_dim if p.has("concat_dim") else p.axis
        axis = canonical_axis(axis, bottoms[0].ndim)
        return (self.xp.concatenate(bottoms, axis=axis),)


@register("Slice")
class Slice(LayerOp):
    def forward(self, x):
        p = self.params
        axis = canonical_axis(p.slice_dim if p.has("slice_dim") else p.axis, x.ndim)
        count = len(self.layer.tops)
        points = list(p.slice_point)
        if points:
            if len(points) != count - 1:
                raise self.fail(f"{len(points)} slice points for {count} tops")
        else:
            if x.shape[axis] % count:
                raise self.fail(f"cannot split {x.shape[axis]} into {count} equal slices")
            step = x.shape[axis] // count
            points = [step * i for i in range(1, count)]
        bounds = [0, *points, x.shape[axis]]
        index = [slice(None)] * x.ndim
        outputs = []
        for start, stop in zip(bounds, bounds[1:]):
            index[axis] = slice(start, stop)
            outputs.append(x[tuple(index)])
        return tuple(outputs)


@register("Flatten")
class Flatten(LayerOp):
    def forward(self, x):
        start = canonical_axis(self.params.axis, x.ndim)
        end = canonical_axis(self.params.end_axis, x.ndim)
        shape = x.shape[:start] + (prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        return (x.reshape(shape),)


@register("Reshape")
class Reshape(LayerOp):
    def forward(self, x):
        p = self.params
        dims = list(p.shape.dim)
        start = p.axis if p.axis >= 0 else p.axis + x.ndim + 1
        if not 0 <= start <= x.ndim:
            raise self.fail(f"axis {p.axis} is out of range")
        end = x.ndim if p.num_axes == -1 else start + p.num_axes
        if end > x.ndim:
            raise self.fail("axis + num_axes runs past the input's axes")
        shape = list(x.shape[:start]) + dims + list(x.shape[end:])
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.fail("at most one dimension may be -1")
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= x.ndim:
                    raise self.fail("a 0 dimension has no input axis to copy")
                shape[start + i] = x.shape[start + i]
        if inferred:
            known = prod(d for i, d in enumerate(shape) if i != start + inferred[0])
            if known == 0 or x.size % known:
                raise self.fail(f"cannot infer -1 for {list(x.shape)} -> {dims}")
            shape[start + inferred[0]] = x.size // known
        if prod(shape) != x.size:
            raise self.fail(f"cannot reshape {list(x.shape)} to {shape}")
        return (x.reshape(shape),)


@register("Crop")
class Crop(LayerOp):
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


@register("Tile")
class Tile(LayerOp):
    def values_needed(self, shapes):
        return prod(shapes[0]) * (1 + max(self.params.tiles, 1))

    def forward(self, x):
        axis = canonical_axis(self.params.axis, x.ndim)
        reps = [1] * x.ndim
        reps[axis] = self.params.tiles
        return (self.xp.tile(x, reps),)


@register("Eltwise")
class Eltwise(LayerOp):
    def forward(self, *bottoms):
        xp, p = self.xp, self.params
        if any(b.shape != bottoms[0].shape for b in bottoms):
            raise self.fail("all inputs must have the same shape")
        operation = p.operation
        if operation == "SUM":
            coefficients = list(p.coeff) or [1.0] * len(bottoms)
            if len(coefficients) != len(bottoms):
                raise self.fail(f"{len(coefficients)} coefficients for {len(bottoms)} inputs")
            dtype = bottoms[0].dtype.type
            y = bottoms[0] * dtype(coefficients[0]) if coefficients[0] != 1 else bottoms[0].copy()
            for coefficient, b in zip(coefficients[1:], bottoms[1:]):
                y += b if coefficient == 1 else b * dtype(coefficient)
            return (y,)
        y = bottoms[0].copy()
        for b in bottoms[1:]:
            if operation == "PROD":
                y *= b
            else:
                xp.maximum(y, b, out=y)
        return (y,)
