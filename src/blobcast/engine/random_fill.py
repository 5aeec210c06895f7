"""Seeded random weights written into a net definition that has none, as
Caffe fills a net it creates (each layer's fillers): a definition alone then
converts, runs and exports like a trained net (a shape and speed check)."""

from __future__ import annotations

import numpy as np

from ..fillers import random_weights
from ..model import Blob, Model
from ..shapes import blob_shapes
from ..weights import expected_blob_count


def fill_random_weights(model: Model, input_shapes: dict | None = None, seed: int = 0,
                        given_shapes: dict | None = None) -> int:
    """Give every layer that lacks its blobs seeded random ones, shaped from
    its bottoms' shapes; returns how many layers were filled. Layers whose
    bottoms' shapes are unknown (after a Python layer) stay as they are."""
    _, shapes = blob_shapes(model, input_shapes, skip_unrunnable=True, given_shapes=given_shapes)
    filled = 0
    for index, layer in enumerate(model.layers):
        expected = expected_blob_count(layer)
        if not expected or sum(blob is not None for blob in layer.blobs) >= expected:
            continue
        if any(bottom not in shapes for bottom in layer.bottoms):
            continue
        rng = np.random.RandomState([seed, index])
        arrays = random_weights(layer, [shapes[bottom] for bottom in layer.bottoms], rng)
        if arrays:
            layer.blobs = [Blob(array) for array in arrays]
            filled += 1
    return filled
