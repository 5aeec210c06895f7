"""Fewer, more portable layers after ONNX import, with the same arithmetic.

ONNX spells Caffe's BatchNorm + Scale pair as BatchNormalization (its scale
and bias at 1 and 0), Mul and Add; imported node by node that is BatchNorm,
an identity Scale, a Scale and a Bias, and OpenCV 4 cannot create Bias
layers. Each rule here gives every value exactly what the layers it
replaces gave:

- a Scale by all ones plus all zeros is dropped (x * 1 + 0 is x);
- a learned Scale without bias whose only reader is a learned Bias over the
  same axes becomes one Scale with bias_term (Caffe's Scale multiplies, then
  adds: the same two operations);
- a learned per-channel Bias whose only input is a Convolution or
  InnerProduct without bias becomes that layer's bias (which it adds after
  the product, as the Bias did);
- a Reshape or Flatten to (N, K) read only by an InnerProduct on axis 1 is
  dropped: the InnerProduct flattens its input that way itself;
- Reshape (N, g, C/g, H, W) + Permute (0, 2, 1, 3, 4) + Reshape (N, C, H, W)
  is ShuffleNet's channel shuffle: one ShuffleChannel with group g;
- a Power that only multiplies, read only by a Power that only adds, is one
  Power (which multiplies, then adds);
- an Eltwise SUM of inputs that Powers only multiply is one Eltwise SUM with
  those coefficients;
- Slices of one blob at the same points on the same axis, each keeping
  pieces the others drop (torch's chunk, written as one Slice per piece),
  are one Slice keeping each piece once; a Silence left with nothing to
  read goes (not every target has Silence).
"""

from __future__ import annotations

import numpy as np

from blobcast.model import Layer


def _learned(layer: Layer) -> bool:
    return len(layer.bottoms) == 1 and len(layer.tops) == 1 and all(b is not None for b in layer.blobs)


def _values(layer: Layer, index: int) -> np.ndarray:
    return layer.blobs[index].data.numpy()


def _is_identity_scale(layer: Layer) -> bool:
    if layer.type != "Scale" or not _learned(layer):
        return False
    ones = bool(np.all(_values(layer, 0) == 1))
    zeros = len(layer.blobs) < 2 or bool(np.all(_values(layer, 1) == 0))
    return ones and zeros


def _same_span(scale: Layer, bias: Layer) -> bool:
    a, b = scale.type_params, bias.type_params
    return a.axis == b.axis and a.num_axes == b.num_axes and \
        _values(scale, 0).shape == _values(bias, 0).shape


def _readers(layers: list[Layer], outputs: set) -> dict:
    """How many layers (and graph outputs) read each blob."""
    counts: dict[str, int] = {name: 1 for name in outputs}
    for layer in layers:
        for bottom in layer.bottoms:
            counts[bottom] = counts.get(bottom, 0) + 1
    return counts


def _rename_after(layers: list[Layer], start: int, old: str, new: str) -> None:
    for layer in layers[start:]:
        layer.spec.bottom = [new if b == old else b for b in layer.bottoms]


def simplify(layers: list[Layer], outputs: set) -> list[Layer]:
    """The layers with the rules above applied; `outputs` are the blobs the
    graph exposes (never renamed away). One pass: after a change the same
    place is looked at again, and the readers' counts are kept up to date."""
    layers = _merge_slices(list(layers), outputs)
    readers = _readers(layers, outputs)
    index = 0
    while index < len(layers):
        if _simplified_at(layers, index, outputs, readers):
            continue
        index += 1
    return layers


def _simplified_at(layers: list[Layer], index: int, outputs: set, readers: dict) -> bool:
    """Apply the first rule that fits the layer at `index`; whether one did."""
    layer = layers[index]
    top = layer.tops[0] if len(layer.tops) == 1 else None
    if _is_identity_scale(layer) and (top == layer.bottoms[0] or top not in outputs):
        del layers[index]
        if top != layer.bottoms[0]:
            _rename_after(layers, index, top, layer.bottoms[0])
            readers[layer.bottoms[0]] += readers.pop(top, 0) - 1
        return True
    if _channel_shuffle_at(layers, index, outputs, readers):
        return True
    if _weighted_sum_at(layers, index, outputs, readers):
        return True
    reader = _only_reader(layers, index, top, readers) if _flattens(layer) else None
    if reader is not None and reader.type == "InnerProduct" and reader.type_params.axis == 1 \
            and top not in outputs:
        reader.spec.bottom = [layer.bottoms[0]]
        del layers[index]
        return True
    following = layers[index + 1] if index + 1 < len(layers) else None
    if following is None or top is None or readers.get(top, 0) != 1 or following.bottoms != [top]:
        return False
    if _scale_then_shift(layer, following) and top not in outputs:
        layer.type_params.shift = following.type_params.shift
        layer.spec.top = list(following.tops)
        del layers[index + 1]
        return True
    if following.type != "Bias" or not _learned(following):
        return False
    merges_scale = layer.type == "Scale" and _learned(layer) and not layer.type_params.bias_term \
        and _same_span(layer, following)
    folds_bias = layer.type in ("Convolution", "InnerProduct") and not layer.type_params.bias_term \
        and len(layer.blobs) == 1 and _per_output(layer, following)
    if not (merges_scale or folds_bias):
        return False
    layer.type_params.bias_term = True
    layer.blobs = [layer.blobs[0], following.blobs[0]]
    layer.spec.top = list(following.tops)
    if merges_scale:
        layer.name = following.name  # the Add carried the Caffe Scale's name
    del layers[index + 1]
    return True


def _per_output(layer: Layer, bias: Layer) -> bool:
    """The Bias adds one value per output channel (axis 1, one axis)."""
    p = bias.type_params
    values = _values(bias, 0)
    outputs = layer.type_params.num_output
    return layer.type_params.axis == 1 and p.axis == 1 and p.num_axes == 1 and values.ndim == 1 \
        and values.shape[0] == outputs


def _flattens(layer: Layer) -> bool:
    """A Reshape to (N, -1) or (N, K), or a Flatten from axis 1 to the end:
    what an InnerProduct on axis 1 does to its input itself."""
    if len(layer.bottoms) != 1 or len(layer.tops) != 1 or layer.tops == layer.bottoms:
        return False
    p = layer.type_params
    if layer.type == "Flatten":
        return p.axis == 1 and p.end_axis == -1
    if layer.type == "Reshape":
        dims = list(p.shape.dim)
        return p.axis == 0 and p.num_axes == -1 and len(dims) == 2 and dims[0] == 0 and \
            (dims[1] == -1 or dims[1] > 0)
    return False


def _only_reader(layers: list[Layer], index: int, top, readers: dict):
    """The one layer after `index` that reads `top`, if only one does."""
    if top is None or readers.get(top, 0) != 1:
        return None
    return next((later for later in layers[index + 1:] if top in later.bottoms), None)


def _channel_shuffle_at(layers: list[Layer], index: int, outputs: set, readers: dict) -> bool:
    """Reshape to (N, g, C/g, H, W), Permute (0, 2, 1, 3, 4), Reshape back to
    (N, C, H, W): ShuffleNet's channel shuffle, written as one ShuffleChannel
    (the same values moved the same way)."""
    if index + 2 >= len(layers):
        return False
    split, permute, merge = layers[index:index + 3]
    if split.type != "Reshape" or permute.type != "Permute" or merge.type != "Reshape":
        return False
    for earlier, later in ((split, permute), (permute, merge)):
        if len(earlier.tops) != 1 or later.bottoms != earlier.tops or \
                readers.get(earlier.tops[0], 0) != 1 or earlier.tops[0] in outputs:
            return False
    grouped, merged = list(split.type_params.shape.dim), list(merge.type_params.shape.dim)
    for reshape in (split, merge):
        if reshape.type_params.axis != 0 or reshape.type_params.num_axes != -1:
            return False
    if list(permute.type_params.order) != [0, 2, 1, 3, 4] or len(grouped) != 5 or len(merged) != 4:
        return False
    if min(grouped[1:]) <= 0 or min(merged[1:]) <= 0 or grouped[0] != merged[0] or \
            merged[1] != grouped[1] * grouped[2] or merged[2:] != grouped[3:]:
        return False
    shuffle = Layer(split.name, "ShuffleChannel", bottoms=list(split.bottoms), tops=list(merge.tops),
                    shuffle_channel_param={"group": grouped[1]})
    layers[index:index + 3] = [shuffle]
    return True


def _scale_then_shift(first: Layer, second: Layer) -> bool:
    """Power multiplying, then Power adding: one Power, which multiplies and
    then adds too (x * a + b either way)."""
    if first.type != "Power" or second.type != "Power":
        return False
    a, b = first.type_params, second.type_params
    return a.power == 1 and a.shift == 0 and b.power == 1 and b.scale == 1


def _weighted_sum_at(layers: list[Layer], index: int, outputs: set, readers: dict) -> bool:
    """An Eltwise SUM whose inputs come from Powers that only multiply (and
    feed nothing else) is one Eltwise SUM with those coefficients: Caffe's
    sums coefficient times input, input by input, as the Powers and the sum
    did."""
    layer = layers[index]
    if layer.type != "Eltwise" or layer.type_params.operation != "SUM" or \
            list(layer.type_params.coeff) or len(set(layer.bottoms)) != len(layer.bottoms):
        return False
    makers = {}
    for earlier in layers[:index]:
        for top in earlier.tops:
            makers[top] = earlier
    scaled = {}
    for bottom in layer.bottoms:
        maker = makers.get(bottom)
        if maker is not None and maker.type == "Power" and len(maker.tops) == 1 and \
                maker.tops != maker.bottoms and readers.get(bottom, 0) == 1 and bottom not in outputs:
            p = maker.type_params
            if p.power == 1 and p.shift == 0:
                scaled[bottom] = maker
    if not scaled:
        return False
    coefficients = [float(scaled[b].type_params.scale) if b in scaled else 1.0 for b in layer.bottoms]
    layer.spec.bottom = [scaled[b].bottoms[0] if b in scaled else b for b in layer.bottoms]
    layer.type_params.coeff = coefficients
    for maker in scaled.values():
        layers.remove(maker)
    return True


def _silenced(layers: list[Layer], outputs: set) -> set:
    """Blobs read by Silence layers and by nothing else."""
    others = {b for layer in layers if layer.type != "Silence" for b in layer.bottoms} | outputs
    return {b for layer in layers if layer.type == "Silence" for b in layer.bottoms} - others


def _merge_slices(layers: list[Layer], outputs: set) -> list[Layer]:
    silenced = _silenced(layers, outputs)
    first_of: dict = {}
    dropped: set = set()
    kept = []
    for layer in layers:
        if layer.type != "Slice" or len(layer.bottoms) != 1:
            kept.append(layer)
            continue
        p = layer.type_params
        key = (layer.bottoms[0], p.axis, tuple(p.slice_point))
        first = first_of.get(key)
        if first is None or not p.slice_point or any(
                a not in silenced and b not in silenced for a, b in zip(first.tops, layer.tops)):
            first_of.setdefault(key, layer)
            kept.append(layer)
            continue
        # Each piece once: the kept one where either keeps it, else the first's.
        merged = [b if a in silenced and b not in silenced else a for a, b in zip(first.tops, layer.tops)]
        dropped |= (set(first.tops) | set(layer.tops)) - set(merged)
        first.spec.top = merged
    for layer in kept:
        if layer.type == "Silence" and set(layer.bottoms) & dropped:
            layer.spec.bottom = [b for b in layer.bottoms if b not in dropped]
    return [layer for layer in kept if layer.type != "Silence" or layer.bottoms]
