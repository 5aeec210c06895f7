"""ONNX export and import of the forks' layers (ReLU6, ShuffleChannel,
Permute, Normalize, Axpy, nearest Upsample), all in standard ONNX ops that
onnxruntime runs."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .registry import exporter


@exporter("ReLU6", as_function=True)
def export_relu6(g, layer, ins, outs):
    g.node("Clip", ins + [g.constant(layer.name, np.float32(0), role="min"),
                          g.constant(layer.name, np.float32(6), role="max")], outs, layer.name)


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


@exporter("Normalize", as_function=True)
def export_normalize(g, layer, ins, outs):
    # eps inside the square root, as SSD computes it (LpNormalization has none).
    p = layer.type_params
    ndim = len(g.shape(layer.bottoms[0]))
    axes = list(range(1, ndim)) if p.across_spatial else [1]
    squares = g.reduce_axes("ReduceSumSquare", ins[0], axes, 1, f"{layer.name}/squares",
                        f"{layer.name}/sum_squares")
    shifted = g.node("Add", [squares, g.constant(layer.name, np.float32(p.eps), role="eps")],
                     [f"{layer.name}/shifted"], f"{layer.name}/eps")
    norm = g.node("Sqrt", [shifted], [f"{layer.name}/norm"], f"{layer.name}/sqrt")
    unit = g.node("Div", [ins[0], norm], [f"{layer.name}/unit"], f"{layer.name}/divide")
    scale = layer.blobs[0].data.numpy()
    scale = scale.reshape(()) if p.channel_shared else scale.reshape((-1,) + (1,) * (ndim - 2))
    g.node("Mul", [unit, g.weight(layer, 0, scale)], outs, layer.name)


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


@exporter("Upsample", as_function=True)
def export_upsample(g, layer, ins, outs):
    from blobcast.layers import LAYER_TYPES

    op = LAYER_TYPES["Upsample"](layer, np, [], "TEST")
    shape = g.shape(layer.bottoms[0])
    if op.unpools():  # SegNet: MaxUnpool takes positions in the whole tensor, Caffe's mask in a plane
        out = list(g.shape(layer.tops[0]))
        planes = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[0], shape[1], 1, 1)
        offsets = g.constant(layer.name, planes * (out[2] * out[3]), np.int64, "plane_offsets")
        positions = g.node("Cast", [ins[1]], [f"{layer.name}/positions"], f"{layer.name}/positions",
                           to=TensorProto.INT64)
        index = g.node("Add", [positions, offsets], [f"{layer.name}/indices"], f"{layer.name}/indices")
        scales = list(op.scales())
        trimmed = [max(0, size * scale - o) for size, scale, o in zip(shape[2:], scales, out[2:])]
        g.node("MaxUnpool", [ins[0], index, g.constant(layer.name, out, np.int64, "size")], outs,
               layer.name, kernel_shape=scales, strides=scales, pads=[0, 0] + trimmed)
        return
    scale_h, scale_w = op.scales()
    scales = g.constant(layer.name, [1.0] * (len(shape) - 2) + [float(scale_h), float(scale_w)],
                        np.float32, "scales")
    multiplier = op.multiplier()
    resized = outs if multiplier == 1.0 else [f"{layer.name}/resized"]
    g.node("Resize", [ins[0], "", scales], resized, layer.name, mode="nearest",
           coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if multiplier != 1.0:  # Huawei ATC's output scale
        g.node("Mul", [resized[0], g.constant(layer.name, multiplier, g.dtype, "multiplier")], outs,
               f"{layer.name}/scale")


@exporter("PriorBox", as_function=True)
def export_prior_box(g, layer, ins, outs):
    # The boxes depend on the shapes alone: with the input shapes fixed, one constant.
    from blobcast.layers import LAYER_TYPES

    op = LAYER_TYPES["PriorBox"](layer, np, [], "TEST")
    boxes, variances = op.boxes(g.shape(layer.bottoms[0]), g.shape(layer.bottoms[1]))
    values = np.stack([boxes.reshape(-1), variances.reshape(-1)]).reshape(1, 2, -1)
    g.node("Identity", [g.constant(layer.name, values.astype(g.dtype), role="priors")], outs, layer.name)


@exporter("Interp", as_function=True)
def export_interp(g, layer, ins, outs):
    from blobcast.layers import LAYER_TYPES

    shape = g.shape(layer.bottoms[0])
    op = LAYER_TYPES["Interp"](layer, np, [], "TEST")
    top, left, height, width = op.region(shape)
    source = ins[0]
    if (height, width) != tuple(shape[-2:]):  # pad_beg/pad_end crop the input first
        source = g.node("Slice", [source, g.constant(layer.name, [top, left], np.int64, "starts"),
                                  g.constant(layer.name, [top + height, left + width], np.int64, "ends"),
                                  g.constant(layer.name, [-2, -1], np.int64, "axes")],
                        [f"{layer.name}/cropped"], f"{layer.name}/crop")
    out_shape = list(g.shape(layer.tops[0]))
    if g.dynamic_batch:
        batch = g.node("Shape", [source], [f"{layer.name}/batch"], f"{layer.name}/shape", start=0, end=1)
        sizes = g.node("Concat", [batch, g.constant(layer.name, out_shape[1:], np.int64, "sizes")],
                       [f"{layer.name}/sizes"], f"{layer.name}/sizes", axis=0)
    else:
        sizes = g.constant(layer.name, out_shape, np.int64, "sizes")
    g.node("Resize", [source, "", "", sizes], outs, layer.name, mode="linear",
           coordinate_transformation_mode="align_corners")
