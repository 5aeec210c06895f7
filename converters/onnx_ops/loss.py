"""ONNX of the loss layers, for the training step (onnx_training.py): each
loss type's term of the total loss, registered under its Caffe type."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .registry import ExportError, loss_exporter


@loss_exporter("SoftmaxWithLoss")
def export_softmax_loss(g, layer, scores: str, label: str, shapes: dict) -> str:
    spec = layer.spec
    axis = spec.softmax_param.axis if spec.has("softmax_param") else 1
    score_shape = shapes[layer.bottoms[0]]
    if axis not in (1, 1 - len(score_shape)):
        raise ExportError(f"loss layer {layer.name!r}: softmax over axis {axis}; ONNX's "
                          "SoftmaxCrossEntropyLoss takes classes on axis 1")
    loss_param = spec.loss_param
    if loss_param.has("normalization"):
        mode = loss_param.normalization
    elif loss_param.has("normalize"):
        mode = "VALID" if loss_param.normalize else "BATCH_SIZE"
    else:
        mode = "VALID"
    target = [score_shape[0], *score_shape[2:]]
    labels = g.node("Cast", [label], f"{layer.name}_label_int", to=TensorProto.INT64)
    labels = g.node("Reshape", [labels, g.const("label_shape", target, np.int64)],
                    f"{layer.name}_label")
    attributes = {}
    if loss_param.has("ignore_label"):
        attributes["ignore_index"] = int(loss_param.ignore_label)
    reduction = "mean" if mode == "VALID" else "sum"
    loss = g.node("SoftmaxCrossEntropyLoss", [scores, labels], f"{layer.name}_loss",
                  reduction=reduction, **attributes)
    count = int(np.prod(target))
    divisor = {"VALID": None, "FULL": count, "BATCH_SIZE": score_shape[0], "NONE": None}[mode]
    if divisor is not None:
        loss = g.binary("Div", loss, g.const("normalizer", float(max(1, divisor)), np.float32),
                        f"{layer.name}_normalized")
    return loss


@loss_exporter("EuclideanLoss")
def export_euclidean_loss(g, layer, a: str, b: str, shapes: dict) -> str:
    difference = g.binary("Sub", a, b, f"{layer.name}_difference")
    squares = g.node("ReduceSumSquare", [difference], f"{layer.name}_sum_sq", keepdims=0)
    batch = shapes[layer.bottoms[0]][0]
    return g.binary("Div", squares, g.const("normalizer", 2.0 * batch, np.float32),
                    f"{layer.name}_loss")
