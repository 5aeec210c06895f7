"""Constant folding for ONNX import: subgraphs whose inputs are all constant
(shape arithmetic and the like) are evaluated with onnx's reference
evaluator, each within the memory budget, and become constants."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from blobcast.errors import FormatError
from blobcast.limits import BudgetExceeded, check_allocation

from .onnx_tensors import SHAPE_VALUES, inferred_bytes, node_tensors, tensor_value

# Ops whose outputs are no larger than their largest input: folded without a
# size check. Any other op's output size (Gather with repeated indices, Concat
# of one input many times, Cast to a wider type, ...) is found before it is folded.
_BOUNDED_BY_INPUTS = {"Shape", "Size", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity",
                      "Transpose", "Slice", "Split", "Neg", "Abs", "Relu", "Sqrt", "Reciprocal", "Exp",
                      "Log", "Floor", "Ceil", "Round", "Sign", "Not", "ReduceMax", "ReduceMin",
                      "ReduceSum", "ReduceMean", "ReduceProd", "Sigmoid", "Tanh", "Softmax"}
_IM2COL = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}  # the evaluator unfolds patches
_FOLDABLE_SKIP = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                  "Multinomial", "Bernoulli"}




_SPREADING = {"ConstantOfShape", "Concat", "Gather", "Expand", "Tile", "Range"}  # can outgrow inputs
MAX_PROPAGATED_VALUES = 2**16  # shape arithmetic works on a few values, not millions


def data_propagation_is_bounded(model) -> bool:
    """Whether onnx's shape inference may propagate values (data_prop): it
    holds every 0-D/1-D value it follows as a list of dimensions, ~64 bytes
    each, so a ConstantOfShape of a million values concatenated a thousand
    times takes tens of gigabytes. Decided by a first inference without
    values: any 1-D value such an op makes that is large or of unknown length
    turns propagation off."""
    try:
        plain = onnx.shape_inference.infer_shapes(model)
    except MemoryError:
        raise
    except Exception:
        return True  # the inference that follows reports the problem
    known = {item.name: item.type.tensor_type for item in list(plain.graph.value_info)
             + list(plain.graph.output)}
    for node in model.graph.node:
        if node.op_type not in _SPREADING:
            continue
        for output in node.output:
            tensor_type = known.get(output)
            if tensor_type is None or not tensor_type.HasField("shape"):
                return False
            dims = tensor_type.shape.dim
            if len(dims) == 1 and (not dims[0].HasField("dim_value")
                                   or dims[0].dim_value > MAX_PROPAGATED_VALUES):
                return False
    return True


def node_attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class ConstantFolding:
    """Mixed into the importer, which holds graph, constants, shapes and opset."""

    def fold_constants(self) -> list:
        from onnx.reference import ReferenceEvaluator

        remaining = []
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self._constant_value(node)
                continue
            if node.op_type == "Shape" and node.input[0] in self.shapes:
                start = node_attributes(node).get("start", 0)
                end = node_attributes(node).get("end", None)
                self.constants[node.output[0]] = np.asarray(self.shapes[node.input[0]][start:end], np.int64)
                continue
            inputs = [i for i in node.input if i]
            if (node.domain in ("", "ai.onnx") and node.op_type not in _FOLDABLE_SKIP
                    and all(i in self.constants for i in inputs) and inputs):
                tiny = helper.make_model(
                    helper.make_graph([node], "fold",
                                      [helper.make_tensor_value_info(i, TensorProto.UNDEFINED, None)
                                       for i in dict.fromkeys(inputs)],
                                      [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                                       for o in node.output]),
                    opset_imports=[helper.make_opsetid("", self.opset)])
                if not self._fold_fits(node, tiny):
                    remaining.append(node)
                    continue
                try:
                    results = ReferenceEvaluator(tiny).run(None, {i: self.const(i) for i in inputs})
                except MemoryError:
                    raise BudgetExceeded(f"folding the constant {node.op_type} node {node.name!r} ran "
                                         "out of memory", self.path) from None
                except Exception:  # an op the evaluator cannot run: the importer says what it is
                    remaining.append(node)
                    continue
                for output, value in zip(node.output, results):
                    self.constants[output] = np.asarray(value)
                continue
            remaining.append(node)
        return remaining

    def _constant_value(self, node) -> np.ndarray:
        if len(node.attribute) != 1:
            raise FormatError(f"Constant node {node.name!r} must have exactly one value", self.path)
        attribute = node.attribute[0]
        where = f"Constant node {node.name or node.output[0]!r}"
        if attribute.name == "value":
            return tensor_value(attribute.t, self.path, where)
        if attribute.name == "sparse_value":
            raise FormatError(f"{where}: sparse constants are not supported", self.path)
        return np.asarray(helper.get_attribute_value(attribute))

    def _fold_fits(self, node, tiny) -> bool:
        """Whether folding `node` stays within the memory budget, known before
        it runs: ops whose output can outgrow their inputs (ConstantOfShape,
        Tile, Expand, Range, broadcasting, ...) get their output shapes from
        shape inference on the input values first; unknown shapes are not folded."""
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return False  # subgraphs are not folded
        if any(t.data_location == TensorProto.EXTERNAL for _, t in node_tensors(node, "")):
            return False  # the evaluator would resolve it against the working directory
        inputs = [self.const(i) for i in node.input if i]
        if node.op_type in _BOUNDED_BY_INPUTS:
            return True
        probe = onnx.ModelProto()
        probe.CopyFrom(tiny)
        for name, value in dict(zip([i for i in node.input if i], inputs)).items():
            if value.size <= SHAPE_VALUES and value.dtype.kind in "iub":
                probe.graph.initializer.append(numpy_helper.from_array(value, name))
            item = next(v for v in probe.graph.input if v.name == name)
            item.CopyFrom(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
        try:
            inferred = onnx.shape_inference.infer_shapes(probe, data_prop=data_propagation_is_bounded(probe),
                                                         strict_mode=True)
        except MemoryError:
            raise
        except Exception:
            return False
        sizes = [inferred_bytes(output, 8) for output in inferred.graph.output]
        if None in sizes:
            return False
        if node.op_type in _IM2COL:
            dims = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
            sizes.append(_patch_bytes(node, inputs, dims))
        check_allocation(sum(sizes), f"folding the constant {node.op_type} node {node.name!r}", self.path)
        return True


def _patch_bytes(node, inputs: list, output_dims: list[int]) -> int:
    """What the reference evaluator's convolution holds besides its output:
    every input patch unfolded (im2col: each position times the kernel's
    dilated extent times the channels), with int64 index arrays as large."""
    if len(inputs) < 2 or inputs[0].ndim < 3 or inputs[1].ndim != inputs[0].ndim:
        return 0
    x, w = inputs[0], inputs[1]
    attributes = node_attributes(node)
    kernel = attributes.get("kernel_shape") or w.shape[2:]
    dilations = attributes.get("dilations") or [1] * len(kernel)
    extent = 1
    for k, d in zip(kernel, dilations):
        extent *= int(k) + (int(k) - 1) * (int(d) - 1)
    if node.op_type == "ConvTranspose":  # one column per input position, output channels deep
        positions, channels = x.size // max(1, x.shape[1]), int(w.shape[1]) * int(attributes.get("group", 1))
    else:
        positions, channels = int(np.prod(output_dims[:1] + output_dims[2:], dtype=object)), x.shape[1]
    return int(positions) * int(channels) * extent * (8 + max(8, x.dtype.itemsize))
