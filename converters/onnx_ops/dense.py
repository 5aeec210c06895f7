"""ONNX export and import of inner products, embeddings, softmax, argmax and
reductions: Caffe type to ONNX ops and back, each handler registered under
the type or op it handles."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .registry import ELEMENT_TYPE, Unsupported, exporter, importer


@exporter("InnerProduct")
def export_inner_product(g, layer, ins, outs):
    p = layer.type_params
    in_shape = g.shape(layer.bottoms[0])
    axis = p.axis % len(in_shape)
    flat = g.node("Flatten", ins, [f"{layer.name}/flat"], f"{layer.name}/flatten", axis=axis)
    gemm_inputs = [flat, g.weight(layer, 0)] + ([g.weight(layer, 1)] if p.bias_term else [])
    out_shape = g.shape(layer.tops[0])
    if axis == 1:
        g.node("Gemm", gemm_inputs, outs, layer.name, transB=0 if p.transpose else 1)
        return
    product = g.node("Gemm", gemm_inputs, [f"{layer.name}/gemm"], f"{layer.name}/gemm",
                     transB=0 if p.transpose else 1)
    target = g.constant(layer.name, g.reshape_target(layer.bottoms[0], out_shape), np.int64,
                        "shape")
    g.node("Reshape", [product, target], outs, layer.name)


@exporter("Softmax")
def export_softmax(g, layer, ins, outs):
    g.node("Softmax", ins, outs, layer.name, axis=layer.type_params.axis)


@exporter("ArgMax")
def export_arg_max(g, layer, ins, outs):
    p = layer.type_params
    shape = g.shape(layer.bottoms[0])
    element = ELEMENT_TYPE[g.dtype]
    if p.has("axis"):
        axis = p.axis % len(shape)
        if p.top_k == 1 and not p.out_max_val:
            index = g.node("ArgMax", ins, [f"{layer.name}/index"], f"{layer.name}/argmax",
                           axis=axis, keepdims=1, select_last_index=1)
            g.node("Cast", [index], outs, layer.name, to=element)
            return
        k = g.constant(layer.name, [p.top_k], np.int64, "k")
        values, indices = g.node("TopK", ins + [k], [f"{layer.name}/values", f"{layer.name}/indices"],
                                 f"{layer.name}/topk", axis=axis)
        if p.out_max_val:
            g.node("Identity", [values], outs, layer.name)
        else:
            g.node("Cast", [indices], outs, layer.name, to=element)
        return
    flat = g.node("Reshape", [ins[0], g.constant(layer.name, [0, -1], np.int64, "shape")],
                  [f"{layer.name}/flat"], f"{layer.name}/flatten")
    k = g.constant(layer.name, [p.top_k], np.int64, "k")
    values, indices = g.node("TopK", [flat, k], [f"{layer.name}/values", f"{layer.name}/indices"],
                             f"{layer.name}/topk", axis=1)
    cast = g.node("Cast", [indices], [f"{layer.name}/index"], f"{layer.name}/cast", to=element)
    out_shape = g.shape(layer.tops[0])
    if p.out_max_val:
        stacked = g.node("Concat", [cast, values], [f"{layer.name}/pairs"], f"{layer.name}/concat",
                         axis=1)
        source = stacked
    else:
        source = cast
    target = g.reshape_target(layer.bottoms[0], out_shape)
    g.node("Reshape", [source, g.constant(layer.name, target, np.int64, "out_shape")],
           outs, layer.name)


@exporter("Reduction")
def export_reduction(g, layer, ins, outs):
    p = layer.type_params
    shape = g.shape(layer.bottoms[0])
    axis = p.axis % len(shape) if shape else 0
    op = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceMean"}[
        p.operation]
    lead = list(shape[:axis])
    tail = int(np.prod(shape[axis:]))
    flat_shape = [-1, tail] if (g.dynamic_batch and axis > 0) else [int(np.prod(lead)), -1]
    flat = g.node("Reshape", [ins[0], g.constant(layer.name, flat_shape, np.int64, "shape")],
                  [f"{layer.name}/flat"], f"{layer.name}/flatten")
    reduced = g.reduce_axes(op, flat, [1], 0, f"{layer.name}/reduced", f"{layer.name}/reduce")
    out_shape = ([-1] + lead[1:]) if (g.dynamic_batch and lead) else lead
    shaped = g.node("Reshape", [reduced, g.constant(layer.name, out_shape, np.int64, "out_shape")],
                    [f"{layer.name}/shaped" if p.coeff != 1 else outs[0]],
                    f"{layer.name}/reshape" if p.coeff != 1 else layer.name)
    if p.coeff != 1:
        g.node("Mul", [shaped, g.constant(layer.name, np.float32(p.coeff))], outs, layer.name)


@exporter("Embed")
def export_embed(g, layer, ins, outs):
    p = layer.type_params
    index = g.node("Cast", ins, [f"{layer.name}/index"], f"{layer.name}/cast", to=TensorProto.INT64)
    weight = g.weight(layer, 0, layer.blobs[0].data.numpy().reshape(p.input_dim, -1))
    if not p.bias_term:
        g.node("Gather", [weight, index], outs, layer.name, axis=0)
        return
    rows = g.node("Gather", [weight, index], [f"{layer.name}/rows"], f"{layer.name}/gather", axis=0)
    g.node("Add", [rows, g.weight(layer, 1, layer.blobs[1].data.numpy().reshape(-1))], outs,
           layer.name)


@importer("Gemm")
def import_gemm(im, node, attrs):
    weight = im.tensor(node.input[1])
    if weight is None or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 \
            or attrs.get("beta", 1.0) != 1.0:
        raise Unsupported("only x @ W (+ b) with a constant W and alpha = beta = 1")
    transposed = not attrs.get("transB", 0)
    outputs = weight.shape[1] if transposed else weight.shape[0]
    bias = im.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    blobs = [weight]
    if bias is not None:
        blobs.append(np.broadcast_to(bias, (outputs,)).astype(bias.dtype).reshape(outputs))
    im.layer(node, "InnerProduct", [node.input[0]], [node.output[0]], blobs,
             inner_product_param={"num_output": outputs, "bias_term": bias is not None,
                                  "transpose": transposed})


@importer("MatMul")
def import_mat_mul(im, node, attrs):
    weight = im.tensor(node.input[1])
    if weight is None or len(weight.shape) != 2:
        raise Unsupported("only x @ W with a constant 2-D W")
    ndim = len(im.shape(node.input[0]))
    im.layer(node, "InnerProduct", [node.input[0]], [node.output[0]], [weight],
             inner_product_param={"num_output": weight.shape[1], "bias_term": False,
                                  "transpose": True, "axis": ndim - 1})


@importer("Softmax")
def import_softmax(im, node, attrs):
    ndim = len(im.shape(node.input[0]))
    axis = attrs.get("axis", -1 if im.opset >= 13 else 1) % ndim
    if im.opset < 13 and axis != ndim - 1:
        raise Unsupported("before opset 13, Softmax flattens the trailing axes")
    im.layer(node, "Softmax", [node.input[0]], [node.output[0]], softmax_param={"axis": axis})


def _reduce(im, node, attrs, operation):
    shape = im.shape(node.input[0])
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = im.const(node.input[1])
    axes = sorted(int(a) % len(shape) for a in (range(len(shape)) if axes is None else axes))
    keepdims = attrs.get("keepdims", 1)
    if operation == "MEAN" and axes == [2, 3] and len(shape) == 4:
        # The mean over H and W is global average pooling, which every target
        # has (OpenCV, TIDL and NCSDK have no Reduction); without keepdims a
        # Flatten drops the two unit axes (and goes when an InnerProduct reads it).
        pooled = node.output[0] if keepdims else f"{node.output[0]}/pooled"
        im.layer(node, "Pooling", [node.input[0]], [pooled], suffix="" if keepdims else "/pool",
                 pooling_param={"pool": "AVE", "global_pooling": True})
        if not keepdims:
            im.layer(node, "Flatten", [pooled], [node.output[0]], flatten_param={"axis": 1})
        return
    if axes != list(range(axes[0], len(shape))) or keepdims:
        raise Unsupported("only reductions over all trailing axes without keepdims")
    im.layer(node, "Reduction", [node.input[0]], [node.output[0]],
             reduction_param={"operation": operation, "axis": axes[0]})


for _op, _operation in (("ReduceMean", "MEAN"), ("ReduceSum", "SUM"), ("ReduceL1", "ASUM"),
                        ("ReduceSumSquare", "SUMSQ")):
    importer(_op)(lambda im, node, attrs, operation=_operation: _reduce(im, node, attrs, operation))


@importer("ArgMax")
def import_arg_max(im, node, attrs):
    """ArgMax over one axis, kept: Caffe's ArgMax with that axis (top_k 1).
    On ties Caffe gives the last index (its sort puts equal values with the
    larger index first); ONNX gives the last with select_last_index=1, which
    blobcast writes, and the first otherwise, which a note says."""
    shape = im.shape(node.input[0])
    if not attrs.get("keepdims", 1):
        raise Unsupported("ArgMax with keepdims=0: Caffe's ArgMax keeps the axis")
    axis = attrs.get("axis", 0) % len(shape)
    if not attrs.get("select_last_index", 0):
        im.notes.append(f"ArgMax {node.name!r}: on ties Caffe gives the last index, this ONNX "
                        "node the first")
    im.layer(node, "ArgMax", [node.input[0]], [node.output[0]], argmax_param={"axis": axis})
