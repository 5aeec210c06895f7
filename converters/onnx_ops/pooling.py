"""ONNX export and import of pooling and spatial pyramid pooling: Caffe type to
ONNX ops and back, each handler registered under the type or op it handles."""

from __future__ import annotations

import numpy as np

from blobcast.layers.pooling import average_divisor, pool_geometry, pooled_size, spp_levels

from .registry import ELEMENT_TYPE, ExportError, Unsupported, exporter, importer


def _pool_settings(g, layer):
    height, width = g.shape(layer.bottoms[0])[2:]
    try:
        geometry = pool_geometry(layer.type_params, height, width)
    except ValueError as error:
        raise ExportError(f"layer {layer.name!r}: {error}") from None
    return None if geometry is None else (*geometry, (height, width))


def _emit_pool(g, layer, source, output, method, kernel, stride, pad, out, size, step=None):
    """Caffe pooling as ONNX floor-mode pooling with explicit end padding."""
    name = layer.name if step is None else f"{layer.name}/{step}"
    ends = []
    for n, k, s, p, o in zip(size, kernel, stride, pad, out):
        end = max(0, (o - 1) * s + k - n - p)
        if (n + p + end - k) // s + 1 != o:
            raise ExportError(f"layer {layer.name!r}: cannot express Caffe's pooled size {o}")
        ends.append(end)
    pads = list(pad) + ends
    common = {"kernel_shape": list(kernel), "strides": list(stride), "pads": pads}
    if method == "MAX":  # output: one name, or [values, indices]
        return g.node("MaxPool", [source], output if isinstance(output, list) else [output], name,
                      **common)
    if method == "AVE":
        overhang = any(e > p for e, p in zip(ends, pad))
        if not overhang:
            return g.node("AveragePool", [source], [output], name, count_include_pad=1, **common)
        if not any(pad):
            # Without padding Caffe's divisor counts just the real elements.
            return g.node("AveragePool", [source], [output], name, count_include_pad=0, **common)
        # Windows past the padding: Caffe divides by the window minus the overhang.
        pooled = g.node("AveragePool", [source], [f"{name}/sum_over_area"], f"{name}/pool",
                        count_include_pad=1, **common)
        factor = (kernel[0] * kernel[1]) / average_divisor(np, size, kernel, stride, pad, out)
        scale = g.constant(layer.name, factor.reshape(1, 1, *out), role="divisor")
        return g.node("Mul", [pooled, scale], [output], name)
    # STOCHASTIC at test time: sum(x^2) / sum(x), 0 where the sum is not positive.
    squares = g.node("Mul", [source, source], [f"{name}/squares"], f"{name}/square")
    top = g.node("AveragePool", [squares], [f"{name}/mean_squares"], f"{name}/pool_squares",
                 count_include_pad=1, **common)
    bottom = g.node("AveragePool", [source], [f"{name}/mean"], f"{name}/pool", count_include_pad=1,
                    **common)
    zero = g.constant(layer.name, 0.0, role="zero")
    positive = g.node("Greater", [bottom, zero], [f"{name}/positive"], f"{name}/positive")
    one = g.constant(layer.name, 1.0, role="one")
    safe = g.node("Where", [positive, bottom, one], [f"{name}/safe"], f"{name}/safe")
    ratio = g.node("Div", [top, safe], [f"{name}/ratio"], f"{name}/ratio")
    return g.node("Where", [positive, ratio, zero], [output], name)


@exporter("Pooling", as_function=lambda layer: len(layer.tops) > 1)
def export_pooling(g, layer, ins, outs):
    settings = _pool_settings(g, layer)
    method = layer.type_params.pool
    if len(outs) > 1:  # MAX with Caffe's mask: positions within each plane
        height, width = g.shape(layer.bottoms[0])[2:]
        if settings is None:
            settings = ((height, width), (1, 1), (0, 0), (1, 1), (height, width))
        indices = f"{layer.name}/indices"
        _emit_pool(g, layer, ins[0], [outs[0], indices], "MAX", *settings)
        plane = g.node("Mod", [indices, g.constant(layer.name, height * width, np.int64, "plane")],
                       [f"{layer.name}/positions"], f"{layer.name}/positions")
        g.node("Cast", [plane], [outs[1]], f"{layer.name}/mask",
               to=ELEMENT_TYPE[np.dtype(g.dtype)])
        return
    if settings is None:
        if method == "STOCHASTIC":
            raise ExportError(f"layer {layer.name!r}: global STOCHASTIC pooling is not exported")
        op = "GlobalMaxPool" if method == "MAX" else "GlobalAveragePool"
        g.node(op, ins, outs, layer.name)
        return
    _emit_pool(g, layer, ins[0], outs[0], method, *settings)


@exporter("SPP")
def export_spp(g, layer, ins, outs):
    p = layer.type_params
    height, width = g.shape(layer.bottoms[0])[2:]
    pieces = []
    for level, (kernel, pad, out) in enumerate(spp_levels(height, width, p.pyramid_height)):
        target = outs[0] if p.pyramid_height == 1 else f"{layer.name}/level{level}"
        pooled = _emit_pool(g, layer, ins[0], target, p.pool, kernel, kernel, pad, out,
                                 (height, width), step=None if p.pyramid_height == 1 else f"level{level}")
        if p.pyramid_height == 1:
            return
        pieces.append(g.node("Flatten", [pooled], [f"{layer.name}/flat{level}"],
                             f"{layer.name}/flatten{level}", axis=1))
    g.node("Concat", pieces, outs, layer.name, axis=1)


def _pool(im, node, attrs, method):
    shape = im.shape(node.input[0])
    if len(shape) != 4:
        raise Unsupported("Caffe pools 4-D blobs only")
    kernel, strides, all_pads, dilations = im.spatial(node, attrs, symmetric=False)
    pads, ends = all_pads[:2], all_pads[2:]
    if any(d != 1 for d in dilations):
        raise Unsupported("dilated pooling has no Caffe equivalent")
    include_pad = attrs.get("count_include_pad", 0)
    if method == "AVE" and not include_pad and any(pads):
        raise Unsupported("count_include_pad=0 with padding differs from Caffe's divisor")
    wanted = im.shape(node.output[0])[2:]
    output = node.output[0]
    if ends != pads:
        # Extra end padding (how Caffe's ceil rounding is written in ONNX) never
        # changes a max; an average is the same while no window reaches past
        # Caffe's own padding, where the divisors would differ, unless a
        # constant correction of the divisor follows (as blobcast writes it).
        reach = [(o - 1) * s + k - p for o, s, k, p in zip(wanted, strides, kernel, pads)]
        overhang = any(r > n + p for r, n, p in zip(reach, shape[2:], pads))
        if method == "AVE" and overhang and include_pad:
            correction = _divisor_correction(im, node, shape[2:], kernel, strides, pads, wanted)
            if correction is None:
                raise Unsupported(f"average pooling with end pads {ends} beyond Caffe's padding")
            im.fused.add(id(correction))
            output = correction.output[0]
    for mode in ("CEIL", "FLOOR"):
        got = tuple(pooled_size(n, k, s, p, mode == "CEIL")
                    for n, k, s, p in zip(shape[2:], kernel, strides, pads))
        if got == tuple(wanted):
            break
    else:
        raise Unsupported(f"Caffe's pooling cannot produce the output size {list(wanted)}")
    settings = {"pool": method, "kernel_h": kernel[0], "kernel_w": kernel[1],
                "stride_h": strides[0], "stride_w": strides[1], "pad_h": pads[0], "pad_w": pads[1]}
    if mode == "FLOOR":
        settings["round_mode"] = "FLOOR"
    im.layer(node, "Pooling", [node.input[0]], [output], pooling_param=settings)


def _divisor_correction(im, node, size, kernel, strides, pads, out):
    """The Mul by Caffe's divisor correction that follows an overhanging
    AveragePool, if there is exactly that."""
    users = im.consumers.get(node.output[0], [])
    if len(users) != 1 or users[0].op_type != "Mul":
        return None
    mul = users[0]
    other = mul.input[1] if mul.input[0] == node.output[0] else mul.input[0]
    factor = im.const(other)
    expected = (kernel[0] * kernel[1]) / average_divisor(np, size, kernel, strides, pads, out)
    if factor is None or factor.size != expected.size or not np.allclose(
            factor.reshape(expected.shape), expected, rtol=1e-6):
        return None
    return mul


@importer("MaxPool")
def import_max_pool(im, node, attrs):
    if len(node.output) > 1 and node.output[1]:
        raise Unsupported("the indices output has no Caffe equivalent")
    _pool(im, node, attrs, "MAX")


@importer("AveragePool")
def import_average_pool(im, node, attrs):
    _pool(im, node, attrs, "AVE")


def _global_pool(method: str):
    def handler(im, node, attrs):
        im.layer(node, "Pooling", [node.input[0]], [node.output[0]],
                 pooling_param={"pool": method, "global_pooling": True})

    return handler


importer("GlobalAveragePool")(_global_pool("AVE"))
importer("GlobalMaxPool")(_global_pool("MAX"))
