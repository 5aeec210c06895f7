"""Random weights from a net definition alone, as Caffe's fillers make them
(include/caffe/filler.hpp), for `run --random-weights`: shape and speed
checks of a deploy prototxt that has no weights file.

Each layer type says its blobs' shapes and fillers (blobcast.layers); this
module fills them, seeded. They are NumPy's random numbers, not Caffe's: the
same seed gives the same weights in blobcast, not in Caffe.
"""

from __future__ import annotations

from math import prod

import numpy as np

from .errors import BlobcastError
from .model import Layer
from .params import Message


def fill(filler: Message, shape: tuple[int, ...], rng: np.random.RandomState) -> np.ndarray:
    """One blob of `shape` filled as Caffe's filler of that type does."""
    kind = filler.type
    count = prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    fans = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}
    if kind == "constant":
        values = np.full(shape, filler.value, np.float64)
    elif kind == "uniform":
        values = rng.uniform(filler.min, filler.max, shape)
    elif kind == "gaussian":
        values = rng.normal(filler.mean, filler.std, shape)
        if filler.sparse >= 0 and shape:
            keep = rng.binomial(1, min(filler.sparse / shape[0], 1.0), shape)
            values = values * keep
    elif kind == "positive_unitball":
        values = rng.uniform(0, 1, shape).reshape(shape[0] if shape else 1, -1)
        values = (values / values.sum(axis=1, keepdims=True)).reshape(shape)
    elif kind == "xavier":
        scale = np.sqrt(3.0 / fans[filler.variance_norm])
        values = rng.uniform(-scale, scale, shape)
    elif kind == "msra":
        values = rng.normal(0.0, np.sqrt(2.0 / fans[filler.variance_norm]), shape)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise BlobcastError(f"the bilinear filler needs a square 4-D kernel, got {list(shape)}")
        factor = -(-shape[3] // 2)
        center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
        x = np.arange(shape[3])
        row = 1 - np.abs(x / factor - center)
        values = np.broadcast_to(row[:, None] * row[None, :], shape).copy()
    else:
        raise BlobcastError(f"unknown filler type {kind!r}")
    return values.astype(np.float32)


def random_weights(layer: Layer, bottom_shapes: list[tuple[int, ...]],
                   rng: np.random.RandomState) -> list[np.ndarray]:
    """A layer's blobs as its type shapes and fills them, from its settings and
    its bottoms' shapes."""
    from .layers import LAYER_TYPES

    kind = LAYER_TYPES.get(layer.type)
    if kind is None:
        return []
    op = kind(layer, np, [], "TEST")
    return [fill(how, shape, rng) for how, shape in zip(op.blob_fillers(),
                                                          op.blob_shapes(bottom_shapes))]
