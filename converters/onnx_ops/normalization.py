"""ONNX export and import of BatchNorm, BN, Scale, Bias, LRN, MVN, Normalize,
and the arithmetic that becomes them: Caffe type to ONNX ops and back, each handler
registered under the type or op it handles."""

from __future__ import annotations

import numpy as np

from .registry import ExportError, Unsupported, exporter, importer


@exporter("BatchNorm")
def export_batch_norm(g, layer, ins, outs):
    p = layer.type_params
    if p.has("use_global_stats") and not p.use_global_stats:
        raise ExportError(f"layer {layer.name!r}: BatchNorm with batch statistics "
                          "(use_global_stats: false) is not exported")
    mean, variance, factor = (b.data.numpy() for b in layer.blobs[:3])
    factor = float(factor.reshape(-1)[0])
    factor = np.float32(0.0 if factor == 0 else 1.0 / factor).astype(mean.dtype)
    channels = mean.shape[0]
    gamma = np.ones(channels, mean.dtype)
    beta = np.zeros(channels, mean.dtype)
    g.node("BatchNormalization",
           ins + [g.constant(layer.name, gamma, role="scale"),
                  g.constant(layer.name, beta, role="bias"),
                  g.constant(layer.name, mean * factor, role="mean"),
                  g.constant(layer.name, variance * factor, role="var")],
           outs, layer.name, epsilon=float(np.float32(p.eps)))


@exporter("BN")
def export_bn(g, layer, ins, outs):
    """PSPNet's BN with its running statistics: BatchNormalization; SegNet's in
    INFERENCE mode: Mul and Add. Batch statistics have no inference form."""
    from blobcast.layers.normalization import BN

    op = BN(layer, np, [])
    if op.batch_statistics():
        raise ExportError(f"layer {layer.name!r}: BN with batch statistics (SegNet's LEARN mode, "
                          "or PSPNet's TRAIN phase unfrozen) is not exported")
    channels = g.shape(layer.bottoms[0])[1]
    ndim = len(g.shape(layer.bottoms[0]))
    if op.is_segnet:
        scale, shift = (g.weight(layer, i, layer.blobs[i].data.numpy().reshape(
            (channels,) + (1,) * (ndim - 2))) for i in (0, 1))
        product = g.node("Mul", [ins[0], scale], [f"{layer.name}/scaled"], f"{layer.name}/mul")
        g.node("Add", [product, shift], outs, layer.name)
        return
    slope, bias, mean, variance = (g.weight(layer, i, layer.blobs[i].data.numpy().reshape(channels))
                                   for i in range(4))
    g.node("BatchNormalization", ins + [slope, bias, mean, variance], outs, layer.name,
           epsilon=float(np.float32(op.params.eps)))


def _broadcast(g, layer, index, in_blob, axis) -> str:
    values = layer.blobs[index].data.numpy()
    ndim = len(g.shape(in_blob))
    if values.size == 1 and values.ndim <= 1 and g.shape(in_blob)[axis:axis + 1] != (1,):
        return g.weight(layer, index, values.reshape(()))
    return g.weight(layer, index, values.reshape(values.shape + (1,) * (ndim - axis - values.ndim)))


def _second_bottom(g, layer, ins, in_shape, axis, role: str) -> str:
    """Scale's or Bias's second bottom, reshaped to broadcast from `axis`."""
    other = g.shape(layer.bottoms[1])
    target = list(other) + [1] * (len(in_shape) - axis - len(other))
    if g.dynamic_batch and axis == 0 and target:
        target[0] = -1
    return g.node("Reshape", [ins[1], g.constant(layer.name, target, np.int64, "shape")],
                  [f"{layer.name}/{role}"], f"{layer.name}/reshape")


@exporter("Scale")
def export_scale(g, layer, ins, outs):
    p = layer.type_params
    in_shape = g.shape(layer.bottoms[0])
    axis = p.axis % len(in_shape) if in_shape else 0
    if len(ins) == 2:
        scale, bias_index = _second_bottom(g, layer, ins, in_shape, axis, "scale"), 0
    else:
        scale, bias_index = _broadcast(g, layer, 0, layer.bottoms[0], axis), 1
    if not p.bias_term:
        g.node("Mul", [ins[0], scale], outs, layer.name)
        return
    product = g.node("Mul", [ins[0], scale], [f"{layer.name}/product"], f"{layer.name}/mul")
    bias_values = layer.blobs[bias_index].data.numpy()
    ndim = len(in_shape)
    if len(ins) == 2:
        bias = g.weight(layer, bias_index, bias_values.reshape(
            g.shape(layer.bottoms[1]) + (1,) * (ndim - axis - len(g.shape(layer.bottoms[1])))))
    else:
        bias = _broadcast(g, layer, bias_index, layer.bottoms[0], axis)
    g.node("Add", [product, bias], outs, layer.name)


@exporter("Bias")
def export_bias(g, layer, ins, outs):
    p = layer.type_params
    in_shape = g.shape(layer.bottoms[0])
    axis = p.axis % len(in_shape) if in_shape else 0
    if len(ins) == 2:
        bias = _second_bottom(g, layer, ins, in_shape, axis, "bias")
    else:
        bias = _broadcast(g, layer, 0, layer.bottoms[0], axis)
    g.node("Add", [ins[0], bias], outs, layer.name)


@exporter("LRN")
def export_lrn(g, layer, ins, outs):
    p = layer.type_params
    if p.norm_region == "ACROSS_CHANNELS":
        g.node("LRN", ins, outs, layer.name, size=p.local_size, alpha=float(np.float32(p.alpha)),
               beta=float(np.float32(p.beta)), bias=float(np.float32(p.k)))
        return
    half = (p.local_size - 1) // 2
    x = ins[0]
    squares = g.node("Mul", [x, x], [f"{layer.name}/squares"], f"{layer.name}/square")
    mean = g.node("AveragePool", [squares], [f"{layer.name}/mean"], f"{layer.name}/pool",
                  kernel_shape=[p.local_size] * 2, strides=[1, 1], pads=[half] * 4,
                  count_include_pad=1)
    scaled = g.node("Mul", [mean, g.constant(layer.name, np.float32(p.alpha))],
                    [f"{layer.name}/scaled"], f"{layer.name}/scale")
    shifted = g.node("Add", [scaled, g.constant(layer.name, np.float32(1))],
                     [f"{layer.name}/shifted"], f"{layer.name}/shift")
    factor = g.node("Pow", [shifted, g.constant(layer.name, -np.float32(p.beta))],
                    [f"{layer.name}/factor"], f"{layer.name}/pow")
    g.node("Mul", [x, factor], outs, layer.name)


@exporter("MVN")
def export_mvn(g, layer, ins, outs):
    p = layer.type_params
    ndim = len(g.shape(layer.bottoms[0]))
    axes = list(range(1 if p.across_channels else 2, ndim))
    x = ins[0]
    mean = g.reduce_axes("ReduceMean", x, axes, 1, f"{layer.name}/mean", f"{layer.name}/mean")
    centered_out = outs[0] if not p.normalize_variance else f"{layer.name}/centered"
    centered = g.node("Sub", [x, mean], [centered_out],
                      layer.name if not p.normalize_variance else f"{layer.name}/center")
    if not p.normalize_variance:
        return
    squares = g.node("Mul", [x, x], [f"{layer.name}/squares"], f"{layer.name}/square")
    mean_squares = g.reduce_axes("ReduceMean", squares, axes, 1, f"{layer.name}/mean_squares",
                             f"{layer.name}/mean_square")
    mean2 = g.node("Mul", [mean, mean], [f"{layer.name}/mean2"], f"{layer.name}/mean2")
    variance = g.node("Sub", [mean_squares, mean2], [f"{layer.name}/var"], f"{layer.name}/var")
    deviation = g.node("Sqrt", [variance], [f"{layer.name}/std"], f"{layer.name}/sqrt")
    denominator = g.node("Add", [deviation, g.constant(layer.name, np.float32(p.eps))],
                         [f"{layer.name}/denominator"], f"{layer.name}/eps")
    g.node("Div", [centered, denominator], outs, layer.name)


@importer("BatchNormalization")
def import_batch_normalization(im, node, attrs):
    if attrs.get("training_mode", 0):
        raise Unsupported("training-mode BatchNormalization")
    scale, bias, mean, variance = (im.tensor(n) for n in node.input[1:5])
    if any(v is None for v in (scale, bias, mean, variance)):
        raise Unsupported("scale, bias, mean and variance must be constant")
    out = node.output[0]
    dtype = np.dtype(mean.dtype)
    im.layer(node, "BatchNorm", [node.input[0]], [out],
             [mean, variance, np.ones(1, dtype)],
             batch_norm_param={"use_global_stats": True, "eps": attrs.get("epsilon", 1e-5)})
    im.layer(node, "Scale", [out], [out], [scale, bias], suffix="/scale",
             scale_param={"bias_term": True})


def _constant_span(im, values, shape):
    """axis, num_axes and squeezed values for broadcasting `values` over `shape`."""
    padded = (1,) * (len(shape) - values.ndim) + tuple(values.shape)
    if len(padded) > len(shape):
        raise Unsupported("the constant has more axes than the input")
    big = [i for i, d in enumerate(padded) if d != 1]
    if not big:
        return None
    start, stop = big[0], big[-1] + 1
    if tuple(padded[start:stop]) != tuple(shape[start:stop]):
        raise Unsupported(f"a constant of shape {list(values.shape)} does not broadcast over "
                          f"axes of {list(shape)} as Caffe's Scale/Bias can")
    return start, stop - start, values.reshape(padded[start:stop])


def _binary(im, node, op):
    a, b = node.input[0], node.input[1]
    ca, cb = im.const(a), im.const(b)
    out = node.output[0]
    if ca is None and cb is None:
        if im.shape(a) != im.shape(b):
            _broadcast_pair(im, node, op, a, b)
            return
        if op == "Div":
            raise Unsupported("division of two tensors has no Caffe equivalent")
        settings = {"operation": "PROD"} if op == "Mul" else {}
        if op == "Sub":
            settings["coeff"] = [1.0, -1.0]
        im.layer(node, "Eltwise", [a, b], [out], eltwise_param=settings)
        return
    if ca is not None and cb is not None:
        raise Unsupported("both inputs constant")
    constant_first = ca is not None
    value, x = (ca, b) if constant_first else (cb, a)
    if constant_first and op in ("Sub", "Div"):
        if op == "Div" or value.size != 1:
            raise Unsupported("a constant divided by (or minus) a tensor")
        im.layer(node, "Power", [x], [out],
                 power_param={"scale": -1.0, "shift": float(value.reshape(()))})
        return
    if op == "Div":
        value = (1.0 / value.astype(np.float64)).astype(value.dtype)
    if op == "Sub":
        value = -value
    if value.size == 1:
        scalar = float(value.reshape(()))
        param = {"scale": scalar} if op in ("Mul", "Div") else {"shift": scalar}
        im.layer(node, "Power", [x], [out], power_param=param)
        return
    span = _constant_span(im, value, im.shape(x))
    if span is None:
        raise Unsupported("a constant of ones")
    axis, count, squeezed = span
    kind = "Scale" if op in ("Mul", "Div") else "Bias"
    key = "scale_param" if kind == "Scale" else "bias_param"
    im.layer(node, kind, [x], [out], [squeezed.astype(np.float32) if squeezed.dtype != np.float64
                                      else squeezed], **{key: {"axis": axis, "num_axes": count}})


def _leading_span(big: tuple, small: tuple) -> int:
    """k where `small` is big[:k] followed by ones (k >= 1), else 0."""
    if len(big) != len(small) or big == small:
        return 0
    k = len(small)
    while k and small[k - 1] == 1:
        k -= 1
    return k if k and tuple(small[:k]) == tuple(big[:k]) else 0


def _broadcast_pair(im, node, op, a, b):
    """x * y or x + y, y of shape x[:k] + (1, ...): Caffe's Scale or Bias with
    a second bottom over x's first k axes (SE-style channel gating, and how
    blobcast exports a two-bottom Scale)."""
    sa, sb = tuple(im.shape(a)), tuple(im.shape(b))
    if op not in ("Mul", "Add") or not (_leading_span(sa, sb) or _leading_span(sb, sa)):
        raise Unsupported("inputs of different shapes (broadcasting) have no Caffe equivalent "
                          "beyond a leading-axes operand (N, C, 1, 1) of (N, C, H, W)")
    x, y = (a, b) if _leading_span(sa, sb) else (b, a)
    span = _leading_span(tuple(im.shape(x)), tuple(im.shape(y)))
    operand = _without_trailing_ones(im, node, y, span)
    kind, key = ("Scale", "scale_param") if op == "Mul" else ("Bias", "bias_param")
    im.layer(node, kind, [x, operand], [node.output[0]], **{key: {"axis": 0}})


def _without_trailing_ones(im, node, name: str, span: int) -> str:
    """The operand as a blob of its first `span` axes: the input of the
    Reshape that added the ones when that Reshape feeds nothing else (it goes),
    else a Reshape that drops them."""
    blob = im.blob(name)
    producer = next((layer for layer in reversed(im.layers) if blob in layer.tops), None)
    readers = im.consumers.get(name, [])
    outputs = {output.name for output in im.graph.output}
    if producer is not None and producer.type == "Reshape" and len(readers) == 1 and \
            name not in outputs and len(im.shape(producer.bottoms[0])) == span:
        im.layers.remove(producer)
        return producer.bottoms[0]
    squeezed = f"{name}/leading" if span == 2 else f"{name}/leading{span}"
    if any(squeezed in layer.tops for layer in im.layers):
        return squeezed  # made for an earlier reader: one blob has one producer in Caffe
    im.layer(node, "Reshape", [name], [squeezed], suffix="/leading",
             reshape_param={"shape": {"dim": [0] * span}})
    im.shapes[squeezed] = tuple(im.shape(name)[:span])
    return squeezed


for _op in ("Add", "Sub", "Mul", "Div"):
    importer(_op)(lambda im, node, attrs, op=_op: _binary(im, node, op))


@importer("LRN")
def import_lrn(im, node, attrs):
    size = attrs["size"]
    if size % 2 == 0:
        raise Unsupported("an even LRN size")
    im.layer(node, "LRN", [node.input[0]], [node.output[0]],
             lrn_param={"local_size": size, "alpha": attrs.get("alpha", 1e-4),
                        "beta": attrs.get("beta", 0.75), "k": attrs.get("bias", 1.0)})


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
