"""Caffe -> ONNX: the graph builder; one handler per Caffe layer type, with
Caffe's exact semantics, in onnx_ops/<family>.py (EXPORTERS).

Value names are Caffe blob names. A blob rewritten in place (ReLU with
top == bottom) is one name per version: the final version keeps the plain
name, as Caffe's net.blobs does, earlier ones are "<blob>:<layer>". Node
names are layer names ("<layer>/<step>" for the extra nodes of a
decomposition). A parameter shared between layers is one initializer.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from onnx import helper

from blobcast.engine import blob_shapes, check_has_weights
from blobcast.errors import BlobcastWarning
from blobcast.model import Model

from .onnx_ops import EXPORTERS
from .onnx_ops.registry import ELEMENT_TYPE, ExportError  # noqa: F401  (ExportError: this module's interface)

CUSTOM_DOMAIN = "ai.blobcast"
DEFAULT_OPSET = 26  # the newest opset onnxruntime 1.31 runs
MIN_OPSET = 17


class GraphBuilder:
    def __init__(self, model: Model, opset: int, input_shapes: dict, dynamic_batch: bool,
                 strict: bool):
        if opset < MIN_OPSET:
            raise ExportError(f"opset {opset} is too old; blobcast writes opset {MIN_OPSET} or newer")
        self.model, self.opset, self.dynamic_batch, self.strict = model, opset, dynamic_batch, strict
        self.net, self.shapes = blob_shapes(model, input_shapes, skip_unrunnable=True)
        # Layers the engine cannot run still go into the graph (as custom nodes),
        # in their place in net order.
        order = {id(layer): i for i, layer in enumerate(model.layers)}
        self.layers = sorted(self.net.layers + self.net.unrun, key=lambda layer: order[id(layer)])
        self.dtype = self.net.dtype
        self.nodes, self.initializers = [], []
        self.initializer_names: dict[int, str] = {}
        self.constant_count = Counter()
        self.custom_layers: list[str] = []
        self.latest: dict[str, str] = {name: name for name in self.net.inputs}
        self._plan_names()

    # -- names ----------------------------------------------------------------
    def _plan_names(self):
        total = Counter(top for layer in self.layers for top in layer.tops)
        seen = Counter()
        self.top_names = {}
        for li, layer in enumerate(self.layers):
            for ti, top in enumerate(layer.tops):
                seen[top] += 1
                final = seen[top] == total[top] and top not in self.net.inputs
                self.top_names[(li, ti)] = top if final else f"{top}:{layer.name}"

    def constant(self, layer_name: str, values, dtype=None, role: str = "c") -> str:
        array = np.asarray(values, dtype=dtype if dtype is not None else self.dtype)
        self.constant_count[layer_name] += 1
        name = f"{layer_name}/{role}{self.constant_count[layer_name]}"
        self.initializers.append((name, array))
        return name

    def weight(self, layer, index: int, array=None) -> str:
        """The initializer of a layer blob; shared blobs are one initializer."""
        blob = layer.blobs[index]
        key = id(blob)
        if array is None and key in self.initializer_names:
            return self.initializer_names[key]
        name = f"{layer.name}/param{index}" if array is None else f"{layer.name}/param{index}_onnx"
        self.initializers.append((name, blob.data if array is None else np.asarray(array)))
        if array is None:
            self.initializer_names[key] = name
        return name

    def node(self, op: str, inputs, outputs, name: str, domain: str = "", **attributes):
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name,
                                           domain=domain or None, **attributes))
        return outputs[0] if len(outputs) == 1 else outputs

    # -- the graph ------------------------------------------------------------
    def build(self):
        for li, layer in enumerate(self.layers):
            ins = [self.latest[b] for b in layer.bottoms]
            outs = [self.top_names[(li, ti)] for ti in range(len(layer.tops))]
            handler = EXPORTERS.get(layer.type)
            if handler is None:
                self._custom(layer, ins, outs)
            else:
                check_has_weights(layer)
                handler(self, layer, ins, outs)
            for top, out in zip(layer.tops, outs):
                self.latest[top] = out
        if self.custom_layers:
            message = ("layers with no ONNX equivalent were written as custom "
                       f"'{CUSTOM_DOMAIN}' nodes: " + ", ".join(self.custom_layers))
            if self.strict:
                raise ExportError(message + " (--strict refuses them)")
            warnings.warn(message, BlobcastWarning, stacklevel=3)
        return self

    def _custom(self, layer, ins, outs):
        self.custom_layers.append(f"{layer.name} ({layer.type})")
        attributes = {}
        if layer.type == "Python":
            p = layer.spec.python_param
            attributes = {"module": p.module, "layer": p.layer, "param_str": p.param_str}
        weights = [self.weight(layer, i) for i in range(len(layer.blobs))]
        self.node(layer.type, ins + weights, outs, layer.name, domain=CUSTOM_DOMAIN, **attributes)

    def shape(self, blob: str) -> tuple[int, ...]:
        try:
            return self.shapes[blob]
        except KeyError:
            raise ExportError(f"the shape of blob {blob!r} is unknown: it comes after a layer the "
                              "engine cannot run") from None

    def reshape_target(self, in_blob: str, out_shape) -> list[int]:
        target = list(out_shape)
        if self.dynamic_batch and target:
            target[0] = -1  # the (symbolic) batch size: whatever the other dims leave
        return target

    def reduce_axes(self, op: str, data: str, axes: list[int], keepdims: int, output: str, name: str):
        axes_as_input = op == "ReduceSum" or self.opset >= 18
        if axes_as_input:
            axes_name = self.constant(name.split("/")[0], axes, np.int64, "axes")
            return self.node(op, [data, axes_name], [output], name, keepdims=keepdims)
        return self.node(op, [data], [output], name, axes=axes, keepdims=keepdims)

    # -- layer handlers ---------------------------------------------------------

def value_info(name: str, shape, element_type, dynamic_batch: bool):
    dims = list(shape)
    if dynamic_batch and dims:
        dims[0] = "batch"
    return helper.make_tensor_value_info(name, element_type, dims)

def build_graph(model: Model, *, opset: int = DEFAULT_OPSET, input_shapes=None,
                dynamic_batch: bool = False, strict: bool = False):
    """(graph pieces) for `model`: nodes, initializers (name, array-like), inputs, outputs."""
    builder = GraphBuilder(model, opset, input_shapes or {}, dynamic_batch, strict).build()
    element = ELEMENT_TYPE[builder.dtype]
    inputs = [value_info(name, builder.shapes[name], element, dynamic_batch) for name in builder.net.inputs]
    consumed = {b for layer in builder.layers for b in layer.bottoms}
    produced = [top for layer in builder.layers for top in layer.tops]
    output_names = [n for n in dict.fromkeys(produced) if n not in consumed or
                    n in builder.net.outputs]
    outputs = [value_info(builder.latest[name], builder.shapes[name], element, dynamic_batch)
               if name in builder.shapes else
               helper.make_tensor_value_info(builder.latest[name], element, None)
               for name in output_names if name not in builder.net.inputs]
    return builder, inputs, outputs
