"""A NumPy executor for the optimizer part of an ONNX training step.

Given the gradients (the outputs of the algorithm graph's Gradient node), it
evaluates what the graph computes after them: clipping, regularization, the
learning rate and the update, and returns the new value of every binding.
It is written by hand because no runtime runs training_info (onnxruntime
ignores it; onnx's reference evaluator has no Gradient and computes the
preview ops partly in float64): blobcast needs it to prove, given the same
gradients, that the step it wrote is Caffe's.

Arithmetic is float32 per op, as Caffe's CPU solver does it. A node of the
training domain (Momentum, Adagrad, Adam) runs as the solver type whose
update it is computes it (blobcast.solvers), so where the op's formula
leaves the grouping open it is Caffe's: Adagrad's and Adam's step is
rate * (G / (sqrt(H) + eps)), and Adam's bias correction is computed in
double and rounded to float32 before it scales the rate.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from blobcast.errors import FormatError
from blobcast.solvers import preview_solver
from blobcast.solvers.base import split_preview_inputs

from .onnx_fold import node_attributes
from .onnx_tensors import tensor_value
from .onnx_training import PREVIEW_DOMAIN

_DTYPES = {1: np.float32, 11: np.float64, 7: np.int64, 9: np.bool_, 6: np.int32}


def _integer_div(a, b):
    quotient = np.abs(a) // np.abs(b)  # C's truncation toward zero
    return np.where((a < 0) != (b < 0), -quotient, quotient).astype(np.result_type(a, b))


def _cast(x, to: int):
    if to not in _DTYPES:
        raise FormatError(f"Cast to ONNX type {to} is not part of a training step")
    return np.asarray(x).astype(_DTYPES[to])


def _sum(*xs):
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


def _sum_of_squares(x, keepdims=1, **_):
    flat = np.ascontiguousarray(x).reshape(-1)
    total = np.dot(flat, flat) if flat.dtype == np.float32 else np.sum(flat * flat)
    total = np.asarray(total, x.dtype)
    return total.reshape((1,) * x.ndim) if keepdims else total


_ELEMENTWISE = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Pow": np.power,
    "Min": np.minimum, "Max": np.maximum, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal, "Less": np.less, "And": np.logical_and,
    "Sqrt": np.sqrt, "Exp": np.exp, "Sign": np.sign, "Neg": np.negative, "Where": np.where,
    "Identity": lambda x: x, "Sum": _sum,
}


def _run_preview(op: str, inputs: list, attributes: dict) -> list:
    """A training-domain update node, by the solver type whose update it is."""
    solver = preview_solver(op)
    if solver is None:
        raise FormatError(f"the training step's {op} node runs before the gradients")
    rate, t = np.asarray(inputs[0]).reshape(()), int(np.asarray(inputs[1]))
    params, gradients, history = split_preview_inputs(tuple(inputs[2:]), len(solver.history))
    new_params, new_history = solver.run_preview(rate, t, params, gradients, history, **attributes)
    return new_params + [value for values in new_history for value in values]


def _run_node(node, inputs: list):
    attributes = node_attributes(node)
    op = node.op_type
    if node.domain == PREVIEW_DOMAIN:
        return _run_preview(op, inputs, attributes)
    if op == "Div":
        a, b = inputs
        if np.asarray(a).dtype.kind in "iu":
            return [_integer_div(np.asarray(a), np.asarray(b))]
        return [np.divide(a, b)]
    if op == "Cast":
        return [_cast(inputs[0], attributes["to"])]
    if op == "ReduceSumSquare":
        return [_sum_of_squares(inputs[0], **attributes)]
    if op == "Gather":
        return [np.take(inputs[0], np.asarray(inputs[1]), axis=attributes.get("axis", 0))]
    if op == "ConstantOfShape":
        fill = (numpy_helper.to_array(attributes["value"]) if "value" in attributes
                else np.zeros(1, np.float32))
        return [np.full(tuple(int(d) for d in inputs[0]), fill.reshape(-1)[0], fill.dtype)]
    if op == "Constant":
        return [numpy_helper.to_array(attributes["value"])]
    if op in _ELEMENTWISE:
        return [np.asarray(_ELEMENTWISE[op](*inputs))]
    raise FormatError(f"the training step has a {op} node, which the executor does not run")


def _bind_gradients(node, gradients: dict, known: dict) -> None:
    """The Gradient node's outputs from the gradients given (by output name,
    by parameter, or by the Caffe name of a blob the graph holds reshaped)."""
    for x, output in zip(list(node_attributes(node)["xs"]), node.output):
        x = x.decode() if isinstance(x, bytes) else x
        given = gradients.get(output, gradients.get(x))
        if given is None and x.endswith("_onnx"):  # a reshaped blob, by its Caffe name
            given = gradients.get(x[: -len("_onnx")])
        if given is None:
            raise FormatError(f"no gradient given for {x!r}")
        given = np.asarray(given, np.float32)
        if x in known and given.shape != np.shape(known[x]):
            if given.size != np.size(known[x]):
                raise FormatError(f"the gradient for {x!r} has shape {list(given.shape)}, "
                                  f"the parameter {list(np.shape(known[x]))}")
            given = given.reshape(np.shape(known[x]))
        known[output] = given


def run_step(training_info, values: dict, gradients: dict, model_path: str = "") -> dict:
    """{binding key: new value} after one step of `training_info`'s algorithm.

    `values`: the inference graph's initializers by name; `gradients`: the
    Gradient node's outputs by name, or by the parameter they belong to
    (`conv1/param0`; a blob the graph holds reshaped also by its Caffe name
    and shape)."""
    algorithm = training_info.algorithm
    known = dict(values)
    for tensor in algorithm.initializer:
        if tensor.name not in known:
            known[tensor.name] = tensor_value(tensor, model_path, f"training initializer {tensor.name!r}")
    producers = {}
    for node in algorithm.node:
        if node.domain == PREVIEW_DOMAIN and node.op_type == "Gradient":
            _bind_gradients(node, gradients, known)
            continue
        for output in node.output:
            producers[output] = node
    computing: set = set()

    def value(name: str):
        if name in known:
            return known[name]
        node = producers.get(name)
        if node is None:
            raise FormatError(f"the training step reads {name!r}, which nothing gives")
        if id(node) in computing:
            raise FormatError(f"the training step's values form a cycle at {name!r}")
        computing.add(id(node))
        results = _run_node(node, [value(i) for i in node.input])
        computing.discard(id(node))
        for output, result in zip(node.output, results):
            known[output] = result
        return known[name]

    return {binding.key: value(binding.value) for binding in training_info.update_binding}
