"""Constant folding for ONNX import: subgraphs whose inputs are all constant
(shape arithmetic and the like) are evaluated with onnx's reference
evaluator, each within the memory budget, and become constants."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from blobcast.errors import FormatError
from blobcast.limits import check_allocation

from .onnx_tensors import SHAPE_VALUES, _node_tensors, inferred_bytes, tensor_value

# Ops whose outputs are no larger than their inputs together: folded without
# a size check. Any other op's output size is found before it is folded.
_BOUNDED_BY_INPUTS = {"Shape", "Size", "Gather", "GatherElements", "Unsqueeze", "Squeeze",
                      "Reshape", "Flatten", "Identity", "Cast", "Transpose", "Slice", "Split",
                      "Concat", "Neg", "Abs", "Relu", "Sqrt", "Reciprocal", "Exp", "Log", "Floor",
                      "Ceil", "Round", "Sign", "Not", "ReduceMax", "ReduceMin", "ReduceSum",
                      "ReduceMean", "ReduceProd", "Sigmoid", "Tanh", "Softmax"}
_FOLDABLE_SKIP = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                  "Multinomial", "Bernoulli"}




def _attributes(node) -> dict:
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
                start = _attributes(node).get("start", 0)
                end = _attributes(node).get("end", None)
                self.constants[node.output[0]] = np.asarray(self.shapes[node.input[0]][start:end], np.int64)
                continue
            inputs = [i for i in node.input if i]
            if (node.domain in ("", "ai.onnx") and node.op_type not in _FOLDABLE_SKIP
                    and all(i in self.constants for i in inputs) and inputs):
                tiny = helper.make_model(
                    helper.make_graph([node], "fold",
                                      [helper.make_tensor_value_info(i, TensorProto.UNDEFINED, None)
                                       for i in inputs],
                                      [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                                       for o in node.output]),
                    opset_imports=[helper.make_opsetid("", self.opset)])
                if not self._fold_fits(node, tiny):
                    remaining.append(node)
                    continue
                try:
                    results = ReferenceEvaluator(tiny).run(None, {i: self.const(i) for i in inputs})
                except Exception:
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
        if any(t.data_location == TensorProto.EXTERNAL for _, t in _node_tensors(node, "")):
            return False  # the evaluator would resolve it against the working directory
        inputs = [self.const(i) for i in node.input if i]
        if node.op_type in _BOUNDED_BY_INPUTS:
            return True
        probe = onnx.ModelProto()
        probe.CopyFrom(tiny)
        for name, value in zip([i for i in node.input if i], inputs):
            if value.size <= SHAPE_VALUES and value.dtype.kind in "iub":
                probe.graph.initializer.append(numpy_helper.from_array(value, name))
            item = next(v for v in probe.graph.input if v.name == name)
            item.CopyFrom(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
        try:
            inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True, strict_mode=True)
        except Exception:
            return False
        sizes = [inferred_bytes(output, 8) for output in inferred.graph.output]
        if None in sizes:
            return False
        check_allocation(sum(sizes), f"folding the constant {node.op_type} node {node.name!r}", self.path)
        return True
