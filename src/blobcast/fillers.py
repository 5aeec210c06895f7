"""Random weights from a net definition alone, as Caffe's fillers make them
(include/caffe/filler.hpp), for `run --random-weights`: shape and speed
checks of a deploy prototxt that has no weights file.

The values are seeded and follow each layer's weight_filler/bias_filler.
Where a deploy prototxt names no weight filler, Caffe's default would be
zeros, which makes every output constant; blobcast uses xavier there (biases
stay constant 0). They are NumPy's random numbers, not Caffe's: the same seed
gives the same weights in blobcast, not in Caffe.
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


def _constant(value: float) -> Message:
    filler = Message("FillerParameter")
    filler.value = value
    return filler


def _given(params, name: str, default: Message) -> Message:
    return getattr(params, name) if params.has(name) else default


def _xavier() -> Message:
    filler = Message("FillerParameter")
    filler.type = "xavier"
    return filler


def _weight_and_bias(params, weight_shape, outputs: int, rng) -> list[np.ndarray]:
    blobs = [fill(_given(params, "weight_filler", _xavier()), weight_shape, rng)]
    if params.bias_term:
        blobs.append(fill(params.bias_filler, (outputs,), rng))
    return blobs


def random_weights(layer: Layer, bottom_shapes: list[tuple[int, ...]],
                   rng: np.random.RandomState) -> list[np.ndarray]:
    """A layer's blobs, shaped from its settings and its bottoms' shapes."""
    from .layers.base import canonical_axis
    from .layers.convolution import spatial_settings

    kind, spec, shape = layer.type, layer.spec, bottom_shapes[0] if bottom_shapes else ()
    if kind in ("Convolution", "Deconvolution"):
        p = spec.convolution_param
        axis = canonical_axis(p.axis, len(shape))
        kernel = spatial_settings(p, len(shape) - axis - 1, layer.name)[0]
        channels = shape[axis]
        weight = ((p.num_output, channels // p.group) if kind == "Convolution"
                  else (channels, p.num_output // p.group)) + tuple(kernel)
        return _weight_and_bias(p, weight, p.num_output, rng)
    if kind == "InnerProduct":
        p = spec.inner_product_param
        depth = prod(shape[canonical_axis(p.axis, len(shape)):])
        weight = (depth, p.num_output) if p.transpose else (p.num_output, depth)
        return _weight_and_bias(p, weight, p.num_output, rng)
    if kind == "Embed":
        p = spec.embed_param
        return _weight_and_bias(p, (p.input_dim, p.num_output), p.num_output, rng)
    if kind == "BatchNorm":
        # Caffe starts from zeros, which divides by sqrt(eps); mean 0, variance 1
        # and factor 1 keep a shape check's values in range.
        channels = shape[1] if len(shape) > 1 else 1
        return [np.zeros(channels, np.float32), np.ones(channels, np.float32),
                np.ones(1, np.float32)]
    if kind in ("Scale", "Bias"):
        p = spec.scale_param if kind == "Scale" else spec.bias_param
        axis = canonical_axis(p.axis, len(shape))
        end = len(shape) if p.num_axes == -1 else axis + p.num_axes
        blob_shape = tuple(shape[axis:end])
        blobs = [] if len(bottom_shapes) > 1 else [
            fill(_given(p, "filler", _constant(1.0 if kind == "Scale" else 0.0)), blob_shape, rng)]
        if kind == "Scale" and p.bias_term:
            blobs.append(fill(_given(p, "bias_filler", _constant(0.0)), blob_shape, rng))
        return blobs
    if kind == "PReLU":
        p = spec.prelu_param
        blob_shape = () if p.channel_shared else (shape[1],)
        return [fill(_given(p, "filler", _constant(0.25)), blob_shape, rng)]
    return []
