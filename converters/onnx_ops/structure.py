"""ONNX export and import of layers that move, split, join, reshape or combine
blobs: Caffe type to ONNX ops and back, each handler registered under the
type or op it handles."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .registry import Unsupported, exporter, importer


@exporter("Concat")
def export_concat(g, layer, ins, outs):
    p = layer.type_params
    axis = p.concat_dim if p.has("concat_dim") else p.axis
    g.node("Concat", ins, outs, layer.name, axis=axis)


@exporter("Slice")
def export_slice(g, layer, ins, outs):
    p = layer.type_params
    shape = g.shape(layer.bottoms[0])
    axis = (p.slice_dim if p.has("slice_dim") else p.axis) % len(shape)
    sizes = [g.shape(top)[axis] for top in layer.tops]
    g.node("Split", ins + [g.constant(layer.name, sizes, np.int64, "split")], outs, layer.name,
           axis=axis)


@exporter("Split")
def export_split(g, layer, ins, outs):
    for i, out in enumerate(outs):
        g.node("Identity", ins, [out], layer.name if i == 0 else f"{layer.name}/{i}")


@exporter("Silence")
def export_silence(g, layer, ins, outs):
    pass


def _reshape_layer(g, layer, ins, outs):
    target = g.reshape_target(layer.bottoms[0], g.shape(layer.tops[0]))
    g.node("Reshape", [ins[0], g.constant(layer.name, target, np.int64, "shape")], outs,
           layer.name)


exporter("Flatten")(_reshape_layer)
exporter("Reshape")(_reshape_layer)


@exporter("Crop", as_function=True)
def export_crop(g, layer, ins, outs):
    p = layer.type_params
    shape, reference = g.shape(layer.bottoms[0]), g.shape(layer.bottoms[1])
    axis = p.axis % len(shape)
    offsets = list(p.offset)
    axes = list(range(axis, len(shape)))
    starts = [0 if not offsets else (offsets[0] if len(offsets) == 1 else offsets[i - axis])
              for i in axes]
    ends = [s + reference[i] for s, i in zip(starts, axes)]
    g.node("Slice", [ins[0], g.constant(layer.name, starts, np.int64, "starts"),
                     g.constant(layer.name, ends, np.int64, "ends"),
                     g.constant(layer.name, axes, np.int64, "axes")], outs, layer.name)


@exporter("Tile")
def export_tile(g, layer, ins, outs):
    shape = g.shape(layer.bottoms[0])
    repeats = [1] * len(shape)
    repeats[layer.type_params.axis % len(shape)] = layer.type_params.tiles
    g.node("Tile", ins + [g.constant(layer.name, repeats, np.int64, "repeats")], outs, layer.name)


@exporter("Eltwise")
def export_eltwise(g, layer, ins, outs):
    p = layer.type_params
    if p.operation == "SUM":
        coefficients = list(p.coeff) or [1.0] * len(ins)
        terms = []
        for i, (x, c) in enumerate(zip(ins, coefficients)):
            if c == 1:
                terms.append(x)
            else:
                terms.append(g.node("Mul", [x, g.constant(layer.name, np.float32(c))],
                                    [f"{layer.name}/term{i}"], f"{layer.name}/scale{i}"))
        g.node("Sum", terms, outs, layer.name)
    elif p.operation == "PROD":
        current = ins[0]
        for i, x in enumerate(ins[1:], start=1):
            last = i == len(ins) - 1
            current = g.node("Mul", [current, x], outs if last else [f"{layer.name}/p{i}"],
                             layer.name if last else f"{layer.name}/mul{i}")
    else:
        g.node("Max", ins, outs, layer.name)


@importer("Tile")
def import_tile(im, node, attrs):
    repeats = im.const(node.input[1])
    if repeats is None:
        raise Unsupported("the repeats must be constant")
    tiled = [axis for axis, count in enumerate(repeats) if count != 1]
    if len(tiled) > 1:
        raise Unsupported("tiling more than one axis")
    if not tiled:
        _identity(im, node, attrs)
        return
    im.layer(node, "Tile", [node.input[0]], [node.output[0]],
             tile_param={"axis": tiled[0], "tiles": int(repeats[tiled[0]])})


@importer("Sum")
def import_sum(im, node, attrs):
    im.layer(node, "Eltwise", list(node.input), [node.output[0]])


@importer("Max")
def import_max(im, node, attrs):
    im.layer(node, "Eltwise", list(node.input), [node.output[0]], eltwise_param={"operation": "MAX"})


@importer("Concat")
def import_concat(im, node, attrs):
    axis = attrs["axis"] % len(im.shape(node.input[0]))
    im.layer(node, "Concat", list(node.input), [node.output[0]], concat_param={"axis": axis})


@importer("Split")
def import_split(im, node, attrs):
    shape = im.shape(node.input[0])
    axis = attrs.get("axis", 0) % len(shape)
    sizes = [im.shape(o)[axis] for o in node.output]
    points = list(np.cumsum(sizes)[:-1])
    im.layer(node, "Slice", [node.input[0]], list(node.output),
             slice_param={"axis": axis, "slice_point": [int(p) for p in points]})


@importer("Slice")
def import_slice(im, node, attrs):
    shape = im.shape(node.input[0])
    starts, ends = im.const(node.input[1]), im.const(node.input[2])
    axes = im.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = im.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts))
    if starts is None or ends is None or axes is None or steps is None or np.any(steps != 1):
        raise Unsupported("only constant slices with step 1")
    cut = [(int(a) % len(shape), int(s), int(e)) for a, s, e in zip(axes, starts, ends)]
    cut = [(a, max(0, s + shape[a] if s < 0 else s), min(shape[a], e + shape[a] if e < 0 else e))
           for a, s, e in cut]
    cut = [c for c in cut if (c[1], c[2]) != (0, shape[c[0]])]
    if len(cut) != 1:
        raise Unsupported("slicing more than one axis has no Caffe equivalent")
    axis, start, stop = cut[0]
    points = [p for p in (start, stop) if 0 < p < shape[axis]]
    tops, keep = [], None
    bounds = [0, *points, shape[axis]]
    for i, (low, high) in enumerate(zip(bounds, bounds[1:])):
        if (low, high) == (start, stop):
            tops.append(node.output[0])
            keep = i
        else:
            tops.append(f"{node.output[0]}/unused{i}")
    if keep is None:
        raise Unsupported("an empty slice")
    im.layer(node, "Slice", [node.input[0]], tops, slice_param={"axis": axis, "slice_point": points})
    unused = [t for i, t in enumerate(tops) if i != keep]
    if unused:
        im.layer(node, "Silence", unused, [], suffix="/silence")


def _reshape(im, node, attrs=None):
    in_shape, out_shape = im.shape(node.input[0]), im.shape(node.output[0])
    if len(in_shape) > 2 and len(out_shape) == 2 and out_shape[0] == in_shape[0]:
        # (N, ...) to (N, rest) is Caffe's Flatten, which every target has
        # (TIDL has no Reshape): the same values in the same order.
        im.layer(node, "Flatten", [node.input[0]], [node.output[0]], flatten_param={"axis": 1})
        return
    dims = list(out_shape)
    if dims and in_shape and dims[0] == in_shape[0]:
        dims[0] = 0  # keep the batch size, whatever it is
    im.layer(node, "Reshape", [node.input[0]], [node.output[0]], reshape_param={"shape": {"dim": dims}})


importer("Reshape")(_reshape)
importer("Flatten")(_reshape)
importer("Squeeze")(_reshape)
importer("Unsqueeze")(_reshape)


@importer("Transpose")
def import_transpose(im, node, attrs):
    shape = im.shape(node.input[0])
    perm = list(attrs.get("perm", reversed(range(len(shape)))))
    moved = [axis for position, axis in enumerate(perm) if axis != position]
    if not moved:
        im.alias[node.output[0]] = im.blob(node.input[0])
        return
    order_of_real = [a for a in perm if shape[a] != 1]
    if order_of_real != sorted(order_of_real):
        # Data moves: SSD's Permute (Caffe 1.0 itself has no such layer).
        im.layer(node, "Permute", [node.input[0]], [node.output[0]], permute_param={"order": perm})
        return
    _reshape(im, node)


def _identity(im, node, attrs):
    im.alias[node.output[0]] = im.blob(node.input[0])


importer("Identity")(_identity)
importer("Dropout")(_identity)


@importer("Cast")
def import_cast(im, node, attrs):
    if attrs.get("to") in (TensorProto.FLOAT, TensorProto.DOUBLE):
        _identity(im, node, attrs)
        return
    raise Unsupported("casts to non-float types")


@exporter("ShuffleChannel", as_function=True)
def export_shuffle_channel(g, layer, ins, outs):
    shape = g.shape(layer.bottoms[0])
    group = layer.type_params.group
    grouped = [shape[0], group, shape[1] // group, *shape[2:]]
    if g.dynamic_batch:
        grouped[0] = -1
    split = g.node("Reshape", [ins[0], g.constant(layer.name, grouped, np.int64, "groups")],
                   [f"{layer.name}/grouped"], f"{layer.name}/group")
    swapped = g.node("Transpose", [split], [f"{layer.name}/swapped"], f"{layer.name}/transpose",
                     perm=[0, 2, 1] + list(range(3, len(grouped))))
    target = g.reshape_target(layer.bottoms[0], shape)
    g.node("Reshape", [swapped, g.constant(layer.name, target, np.int64, "shape")], outs, layer.name)


@exporter("Permute")
def export_permute(g, layer, ins, outs):
    from blobcast.layers import LAYER_TYPES

    order = LAYER_TYPES["Permute"](layer, np, [], "TEST").order(len(g.shape(layer.bottoms[0])))
    g.node("Transpose", ins, outs, layer.name, perm=order)


@exporter("Axpy", as_function=True)
def export_axpy(g, layer, ins, outs):
    a, x = g.shape(layer.bottoms[0]), g.shape(layer.bottoms[1])
    target = list(a[:2]) + [1] * (len(x) - 2)
    if g.dynamic_batch:
        target[0] = -1
    scale = g.node("Reshape", [ins[0], g.constant(layer.name, target, np.int64, "shape")],
                   [f"{layer.name}/scale"], f"{layer.name}/reshape")
    product = g.node("Mul", [scale, ins[1]], [f"{layer.name}/product"], f"{layer.name}/mul")
    g.node("Add", [product, ins[2]], outs, layer.name)
