"""ONNX export and import of element-wise activations: Caffe type to ONNX ops
and back, each handler registered under the type or op it handles."""

from __future__ import annotations

import numpy as np

from blobcast.layers.activation import exp_factors, log_factor

from .registry import ELEMENT_TYPE, Unsupported, exporter, importer


@exporter("ReLU")
def export_re_lu(g, layer, ins, outs):
    slope = layer.type_params.negative_slope
    if slope:
        g.node("LeakyRelu", ins, outs, layer.name, alpha=float(np.float32(slope)))
    else:
        g.node("Relu", ins, outs, layer.name)


@exporter("PReLU")
def export_p_re_lu(g, layer, ins, outs):
    values = layer.blobs[0].data.numpy()
    ndim = len(g.shape(layer.bottoms[0]))
    if layer.type_params.channel_shared:
        slope = g.weight(layer, 0, values.reshape(1))
    else:
        slope = g.weight(layer, 0, values.reshape((-1,) + (1,) * (ndim - 2)))
    g.node("PRelu", ins + [slope], outs, layer.name)


@exporter("ELU")
def export_elu(g, layer, ins, outs):
    g.node("Elu", ins, outs, layer.name, alpha=float(np.float32(layer.type_params.alpha)))


def _simple(op):
    def handler(g, layer, ins, outs):
        g.node(op, ins, outs, layer.name)

    return handler


exporter("Sigmoid")(_simple("Sigmoid"))
exporter("TanH")(_simple("Tanh"))
exporter("AbsVal")(_simple("Abs"))
exporter("BNLL")(_simple("Softplus"))


@exporter("Dropout")
def export_dropout(g, layer, ins, outs):
    from blobcast.layers.activation import Dropout

    factor = Dropout(layer, np, []).test_factor()  # caffe-fast-rcnn's scale_train: false
    if factor is None:
        g.node("Identity", ins, outs, layer.name)
    else:
        g.node("Mul", [ins[0], g.constant(layer.name, factor, role="scale")], outs, layer.name)


@exporter("Power")
def export_power(g, layer, ins, outs):
    p = layer.type_params
    power, scale, shift = (np.float32(v) for v in (p.power, p.scale, p.shift))
    if power * scale == 0:
        value = np.float32(1) if power == 0 else np.float32(shift) ** power
        shape = g.node("Shape", ins, [f"{layer.name}/shape"], f"{layer.name}/shape")
        g.node("Expand", [g.constant(layer.name, value), shape], outs, layer.name)
        return
    steps = []
    if scale != 1:
        steps.append(("Mul", scale))
    if shift != 0:
        steps.append(("Add", shift))
    if power != 1:
        steps.append(("Pow", power))
    if not steps:
        g.node("Identity", ins, outs, layer.name)
        return
    current = ins[0]
    for i, (op, value) in enumerate(steps):
        last = i == len(steps) - 1
        current = g.node(op, [current, g.constant(layer.name, value)],
                         outs if last else [f"{layer.name}/{op.lower()}"],
                         layer.name if last else f"{layer.name}/{op.lower()}")


@exporter("Exp")
def export_exp(g, layer, ins, outs):
    inner, outer = exp_factors(layer.type_params)
    inner = np.float32(inner)
    x = ins[0]
    if inner != 1:
        x = g.node("Mul", [x, g.constant(layer.name, inner)], [f"{layer.name}/scaled"],
                   f"{layer.name}/scale")
    if outer == 1:
        g.node("Exp", [x], outs, layer.name)
        return
    e = g.node("Exp", [x], [f"{layer.name}/exp"], f"{layer.name}/exp")
    g.node("Mul", [e, g.constant(layer.name, np.float32(outer))], outs, layer.name)


@exporter("Log")
def export_log(g, layer, ins, outs):
    p = layer.type_params
    base_scale = log_factor(p)
    x = ins[0]
    if not (p.scale == 1 and p.shift == 0):
        x = g.node("Mul", [x, g.constant(layer.name, np.float32(p.scale))],
                   [f"{layer.name}/scaled"], f"{layer.name}/scale")
        x = g.node("Add", [x, g.constant(layer.name, np.float32(p.shift))],
                   [f"{layer.name}/shifted"], f"{layer.name}/shift")
    if base_scale == 1:
        g.node("Log", [x], outs, layer.name)
        return
    logged = g.node("Log", [x], [f"{layer.name}/log"], f"{layer.name}/log")
    g.node("Mul", [logged, g.constant(layer.name, np.float32(base_scale))], outs, layer.name)


@exporter("Threshold")
def export_threshold(g, layer, ins, outs):
    above = g.node("Greater", [ins[0], g.constant(layer.name, np.float32(
        layer.type_params.threshold))], [f"{layer.name}/above"], f"{layer.name}/greater")
    g.node("Cast", [above], outs, layer.name, to=ELEMENT_TYPE[g.dtype])


@exporter("Clip")
def export_clip(g, layer, ins, outs):
    p = layer.type_params
    g.node("Clip", ins + [g.constant(layer.name, np.float32(p.min), role="min"),
                          g.constant(layer.name, np.float32(p.max), role="max")], outs, layer.name)


@exporter("Swish")
def export_swish(g, layer, ins, outs):
    beta = np.float32(layer.type_params.beta)
    x = ins[0]
    scaled = x if beta == 1 else g.node("Mul", [x, g.constant(layer.name, beta)],
                                        [f"{layer.name}/scaled"], f"{layer.name}/scale")
    gate = g.node("Sigmoid", [scaled], [f"{layer.name}/gate"], f"{layer.name}/sigmoid")
    g.node("Mul", [x, gate], outs, layer.name)


def _unary(kind, **settings):
    def handler(im, node, attrs):
        im.layer(node, kind, [node.input[0]], [node.output[0]], **settings)

    return handler


importer("Relu")(_unary("ReLU"))
importer("Sigmoid")(_unary("Sigmoid"))
importer("Tanh")(_unary("TanH"))
importer("Abs")(_unary("AbsVal"))
importer("Exp")(_unary("Exp"))
importer("Log")(_unary("Log"))
importer("Softplus")(_unary("BNLL"))
importer("Sqrt")(_unary("Power", power_param={"power": 0.5}))
importer("Neg")(_unary("Power", power_param={"scale": -1.0}))
importer("Reciprocal")(_unary("Power", power_param={"power": -1.0}))


@importer("LeakyRelu")
def import_leaky_relu(im, node, attrs):
    im.layer(node, "ReLU", [node.input[0]], [node.output[0]],
             relu_param={"negative_slope": attrs.get("alpha", 0.01)})


@importer("Elu")
def import_elu(im, node, attrs):
    im.layer(node, "ELU", [node.input[0]], [node.output[0]],
             elu_param={"alpha": attrs.get("alpha", 1.0)})


@importer("PRelu")
def import_p_relu(im, node, attrs):
    slope = im.const(node.input[1])
    if slope is None:
        raise Unsupported("the slope must be constant")
    if slope.size == 1:
        im.layer(node, "PReLU", [node.input[0]], [node.output[0]], [slope.reshape(())],
                 prelu_param={"channel_shared": True})
        return
    channels = im.shape(node.input[0])[1]
    if slope.size != channels:
        raise Unsupported("the slope must be per channel or shared")
    im.layer(node, "PReLU", [node.input[0]], [node.output[0]], [slope.reshape(channels)])


@importer("Clip")
def import_clip(im, node, attrs):
    low = im.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("min")
    high = im.const(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("max")
    low = None if low is None else float(np.asarray(low).reshape(()))
    high = None if high is None else float(np.asarray(high).reshape(()))
    if low == 0 and high is None:
        im.layer(node, "ReLU", [node.input[0]], [node.output[0]])
        return
    limit = float(np.finfo(np.float32).max)
    im.layer(node, "Clip", [node.input[0]], [node.output[0]],
             clip_param={"min": -limit if low is None else low, "max": limit if high is None else high})


@importer("Pow")
def import_pow(im, node, attrs):
    exponent = im.const(node.input[1])
    if exponent is None or exponent.size != 1 or im.const(node.input[0]) is not None:
        raise Unsupported("only a tensor to a constant scalar power")
    im.layer(node, "Power", [node.input[0]], [node.output[0]],
             power_param={"power": float(exponent.reshape(()))})


def _hard_sigmoid(im, node, attrs, source: str, output: str, suffix: str = "") -> None:
    """max(0, min(1, alpha * x + beta)) as ONNX computes it: Power (scale
    alpha, shift beta: the same product, then the same sum) and Clip(0, 1);
    a target without Clip gets Clip's exact lowering (blobcast.targets)."""
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    if node.op_type == "HardSwish":  # fixed by the operator's definition
        alpha, beta = 1.0 / 6.0, 0.5
    affine = f"{output}/affine"
    im.layer(node, "Power", [source], [affine], suffix=f"{suffix}/affine",
             power_param={"scale": float(alpha), "shift": float(beta)})
    im.layer(node, "Clip", [affine], [output], suffix=suffix, clip_param={"min": 0.0, "max": 1.0})


@importer("HardSigmoid")
def import_hard_sigmoid(im, node, attrs):
    _hard_sigmoid(im, node, attrs, node.input[0], node.output[0])


@importer("HardSwish")
def import_hard_swish(im, node, attrs):
    """x * HardSigmoid(x) with alpha 1/6 and beta 1/2: the gate as above,
    then Eltwise PROD with x."""
    gate = f"{node.output[0]}/gate"
    _hard_sigmoid(im, node, attrs, node.input[0], gate, suffix="/gate")
    im.layer(node, "Eltwise", [node.input[0], gate], [node.output[0]],
             eltwise_param={"operation": "PROD"})


@exporter("ReLU6", as_function=True)
def export_relu6(g, layer, ins, outs):
    g.node("Clip", ins + [g.constant(layer.name, np.float32(0), role="min"),
                          g.constant(layer.name, np.float32(6), role="max")], outs, layer.name)
