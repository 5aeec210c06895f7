"""ONNX export and import of resampling: the forks' Upsample (nearest
Resize, or SegNet's MaxUnpool) and Interp (bilinear Resize with aligned
corners), and ONNX's Resize/Upsample read back as Interp or as a grouped
Deconvolution of ones."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .registry import Unsupported, exporter, importer


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


@importer("Resize")
def import_resize(im, node, attrs):
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    in_shape, out_shape = im.shape(node.input[0]), im.shape(node.output[0])
    transform = attrs.get("coordinate_transformation_mode", b"half_pixel")
    transform = transform.decode() if isinstance(transform, bytes) else transform
    if mode == "linear" and transform == "align_corners" and len(in_shape) == 4 and \
            in_shape[:2] == out_shape[:2]:
        # PSPNet/DeepLab's Interp: bilinear with aligned corners, to a given size.
        im.layer(node, "Interp", [node.input[0]], [node.output[0]],
                 interp_param={"height": int(out_shape[2]), "width": int(out_shape[3])})
        return
    if mode != "nearest" or len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
        raise Unsupported("only nearest upsampling of height and width, or bilinear with "
                          "align_corners (Interp)")
    factors = [o // i for i, o in zip(in_shape[2:], out_shape[2:])]
    if any(o != i * f for i, o, f in zip(in_shape[2:], out_shape[2:], factors)) or min(factors) < 1:
        raise Unsupported("only whole-number scale factors")
    channels = in_shape[1]
    # Nearest upsampling by whole factors is a grouped deconvolution with ones.
    weight = np.ones((channels, 1, factors[0], factors[1]), np.float32)
    im.layer(node, "Deconvolution", [node.input[0]], [node.output[0]], [weight],
             param=[{"lr_mult": 0.0, "decay_mult": 0.0}],
             convolution_param={"num_output": channels, "group": channels, "bias_term": False,
                                "kernel_h": factors[0], "kernel_w": factors[1],
                                "stride_h": factors[0], "stride_w": factors[1]})


importer("Upsample")(import_resize)
