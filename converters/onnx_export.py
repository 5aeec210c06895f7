"""Caffe -> ONNX: the graph builder; one handler per Caffe layer type, with
Caffe's exact semantics, in onnx_ops/<family>.py (EXPORTERS).

Value names are Caffe blob names. A blob rewritten in place (ReLU with
top == bottom) is one name per version, as blobcast.values names them: the
final version keeps the plain name, as Caffe's net.blobs does, earlier ones
are "<blob>:<layer>". Node
names are layer names ("<layer>/<step>" for the extra nodes of a
decomposition). A parameter shared between layers is one initializer.

Fork layers written as several nodes become model-local functions in
FUNCTION_DOMAIN: one call node per layer (its weights passed as inputs, its
Caffe settings in the `caffe_layer` attribute) and a body of standard ops
that runtimes inline. Types with no ONNX form become custom-domain nodes
with the same attribute, so nothing is lost on the way back to Caffe.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from onnx import helper, numpy_helper

from blobcast.errors import BlobcastWarning
from blobcast.layers import spec_for
from blobcast.layers.base import UNKNOWN_SETTINGS
from blobcast.model import Model
from blobcast.shapes import blob_shapes
from blobcast.values import BlobVersions
from blobcast.weights import check_has_weights

from .caffemodel import layer_settings_bytes
from .onnx_modules import module_call, module_spans
from .onnx_ops import EXPORTERS, exported_as_function
from .onnx_ops.registry import ELEMENT_TYPE, ExportError, NoStandardForm  # noqa: F401  (ExportError: this module's interface)

CUSTOM_DOMAIN = "ai.blobcast"
FUNCTION_DOMAIN = "ai.blobcast.caffe"
LAYER_ATTRIBUTE = "caffe_layer"  # the layer's LayerParameter (no blobs), serialized
DEFAULT_OPSET = 26  # the newest opset onnxruntime 1.31 runs
MIN_OPSET = 17


class GraphBuilder:
    def __init__(self, model: Model, opset: int, input_shapes: dict, dynamic_batch: bool,
                 strict: bool, given_shapes: dict | None = None):
        if opset < MIN_OPSET:
            raise ExportError(f"opset {opset} is too old; blobcast writes opset {MIN_OPSET} or newer")
        self.model, self.opset, self.dynamic_batch, self.strict = model, opset, dynamic_batch, strict
        self.schedule, self.shapes = blob_shapes(model, input_shapes, skip_unrunnable=True,
                                            given_shapes=given_shapes)
        # Layers the engine cannot run still go into the graph (as custom nodes),
        # in their place in net order.
        self.layers = self.schedule.in_order
        self.dtype = self.schedule.dtype
        self.nodes, self.initializers = [], []
        self.initializer_names: dict[int, str] = {}
        self.constant_count = Counter()
        self.custom_layers: list[str] = []
        self.functions: list = []           # FunctionProtos: function-exported layers, modules
        self.module_functions: dict = {}    # canonical module body -> function name
        self._body: list | None = None      # the nodes of the function being written
        self._function_inputs: list[str] = []
        self.symbolic_shapes: dict[str, list] = {}  # data-dependent outputs: dims, names for unknowns
        self.latest: dict[str, str] = {name: name for name in self.schedule.inputs}
        # One value name per blob version (blobcast.values).
        self.versions = BlobVersions(self.layers, self.schedule.inputs)

    def constant(self, layer_name: str, values, dtype=None, role: str = "c") -> str:
        array = np.asarray(values, dtype=dtype if dtype is not None else self.dtype)
        self.constant_count[layer_name] += 1
        name = f"{layer_name}/{role}{self.constant_count[layer_name]}"
        if self._body is not None:  # function bodies hold no initializers
            self.node("Constant", [], [name], f"{name}/value",
                      value=numpy_helper.from_array(np.array(array), name))
        else:
            self.initializers.append((name, array))
        return name

    def weight(self, layer, index: int, array=None) -> str:
        """The initializer of a layer blob; shared blobs are one initializer.
        `array`: the blob's values in the shape ONNX needs (inside a function,
        the blob itself is passed and reshaped in the body)."""
        blob = layer.blobs[index]
        key = id(blob)
        if self._body is not None:
            body, self._body = self._body, None
            name = self.weight(layer, index)
            self._body = body
            if name not in self._function_inputs:
                self._function_inputs.append(name)
            if array is None:
                return name
            shape = self.constant(layer.name, np.shape(array), np.int64, f"param{index}_shape")
            return self.node("Reshape", [name, shape], [f"{layer.name}/param{index}_onnx"],
                             f"{layer.name}/param{index}_reshape")
        if array is None and key in self.initializer_names:
            return self.initializer_names[key]
        name = f"{layer.name}/param{index}" if array is None else f"{layer.name}/param{index}_onnx"
        self.initializers.append((name, blob.data if array is None else np.asarray(array)))
        if array is None:
            self.initializer_names[key] = name
        return name

    def node(self, op: str, inputs, outputs, name: str, domain: str = "", **attributes):
        made = helper.make_node(op, list(inputs), list(outputs), name=name, domain=domain or None,
                                **attributes)
        (self.nodes if self._body is None else self._body).append(made)
        return outputs[0] if len(outputs) == 1 else outputs

    # -- the graph ------------------------------------------------------------
    def build(self):
        plan = module_spans(self.layers, lambda layer: layer.type in EXPORTERS) \
            if self.model.modules else {}
        capture = None
        self._last_read = self.versions.last_reads()
        for li, layer in enumerate(self.layers):
            if li in plan:  # a module instance: its nodes become one function call
                capture = (*plan[li], self._body, self._function_inputs, li)
                self._body, self._function_inputs = [], []
            absent = [b for b in layer.bottoms if b not in self.latest]
            if absent:
                raise ExportError(f"layer {layer.name!r} ({layer.type or 'no type'}) reads "
                                  f"{absent[0]!r}, which no exported layer or input gives")
            ins = [self.latest[b] for b in layer.bottoms]
            outs = [self.versions.written[li, ti].name for ti in range(len(layer.tops))]
            handler = EXPORTERS.get(layer.type)
            if handler is None:
                self._custom(layer, ins, outs)
            else:
                check_has_weights(layer)
                try:
                    if exported_as_function(layer):
                        self._function(handler, layer, ins, outs)
                    else:
                        handler(self, layer, ins, outs)
                except NoStandardForm as reason:
                    self._custom(layer, ins, outs, str(reason))
            for top, out in zip(layer.tops, outs):
                self.latest[top] = out
            self._declare_data_dependent_shapes(layer, outs)
            if capture is not None and li == capture[1]:
                self._call_module(self.model.modules[capture[0]], li, capture)
                capture = None
        if self.custom_layers:
            message = ("layers with no ONNX equivalent were written as custom "
                       f"'{CUSTOM_DOMAIN}' nodes: " + ", ".join(self.custom_layers))
            if self.strict:
                raise ExportError(message + " (--strict refuses them)")
            warnings.warn(message, BlobcastWarning, stacklevel=3)
        return self

    def _declare_data_dependent_shapes(self, layer, outs):
        spec = spec_for(layer.type)
        known = spec.data_dependent_top_shapes(layer) if spec is not None else None
        for top, out, dims in zip(layer.tops, outs, known or []):
            if top not in self.shapes and dims is not None:
                self.symbolic_shapes[out] = [f"{layer.name}_{top}_{i}" if d is None else d
                                             for i, d in enumerate(dims)]

    def _call_module(self, instance, last: int, capture) -> None:
        body = self._body
        self._body, self._function_inputs = capture[2], capture[3]
        # the values of the instance's tops that a later layer reads: its own
        # layers, not every later one, so a net of many instances stays linear
        later = {self.latest[top] for layer in self.layers[capture[4]:last + 1] for top in layer.tops
                 if self._last_read.get(top, -1) > last}
        outputs = {self.latest[name] for name in self.schedule.outputs if name in self.latest}
        call = module_call(self, instance, body, later, outputs)
        (self.nodes if self._body is None else self._body).append(call)

    def _function(self, handler, layer, ins, outs):
        """The layer as a call of a function whose body `handler` writes."""
        outer = self._body, self._function_inputs  # a module's body, when inside one
        self._body, self._function_inputs = [], []
        try:
            handler(self, layer, ins, outs)
            body, weights = self._body, self._function_inputs
        finally:
            self._body, self._function_inputs = outer
        taken = {f.name for f in self.functions}
        name = layer.type if layer.type not in taken else next(
            f"{layer.type}_{i}" for i in range(2, len(taken) + 2) if f"{layer.type}_{i}" not in taken)
        formal, seen = [], set()
        for i, value in enumerate(ins + weights):  # formal inputs are unique names
            formal.append(value if value not in seen else f"{value}#unused{i}")
            seen.add(value)
        self.functions.append(helper.make_function(
            FUNCTION_DOMAIN, name, formal, list(outs), body,
            [helper.make_opsetid("", self.opset)], attributes=[LAYER_ATTRIBUTE],
            doc_string=f"Caffe {layer.type} layer, in standard ONNX ops"))
        self.node(name, ins + weights, outs, layer.name, domain=FUNCTION_DOMAIN,
                  **{LAYER_ATTRIBUTE: layer_settings_bytes(layer)})

    def _custom(self, layer, ins, outs, reason: str = ""):
        self.custom_layers.append(f"{layer.name} ({layer.type}{': ' + reason if reason else ''})")
        attributes = {LAYER_ATTRIBUTE: layer_settings_bytes(layer)}
        if layer.type == "Python":
            p = layer.spec.python_param
            attributes.update(module=p.module, layer=p.layer, param_str=p.param_str)
        weights = [self.weight(layer, i) for i in range(len(layer.blobs))]
        self.node(layer.type, ins + weights, outs, layer.name, domain=CUSTOM_DOMAIN, **attributes)

    def shape(self, blob: str) -> tuple[int, ...]:
        try:
            return self.shapes[blob]
        except KeyError:
            raise ExportError(f"the shape of blob {blob!r} is unknown: it comes after a layer the "
                              f"engine cannot run or size; {self.shape_hint()}") from None

    def shape_hint(self) -> str:
        """How to give the shapes blobcast cannot tell."""
        left_out = {id(layer) for layer in self.schedule.unrun}
        unsized = [top for layer in self.layers if id(layer) in left_out or layer.type == "Python"
                   for top in layer.tops if top not in self.shapes]
        hint = ("give the shapes of " + ", ".join(repr(t) for t in dict.fromkeys(unsized))
                + " with --shape BLOB=N,C,H,W") if unsized else "give them with --shape BLOB=N,C,H,W"
        unknown = [f"layer {s.name!r} ({s.type}): {s.reason.removeprefix('not run: ')}"
                   for s in self.schedule.skipped if UNKNOWN_SETTINGS in s.reason]
        return hint + ("; " + "; ".join(unknown) if unknown else "")

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
                dynamic_batch: bool = False, strict: bool = False, given_shapes=None):
    """(graph pieces) for `model`: nodes, initializers (name, array-like), inputs, outputs.
    `given_shapes` (blob -> shape): the tops of layers whose shapes blobcast cannot tell."""
    builder = GraphBuilder(model, opset, input_shapes or {}, dynamic_batch, strict,
                           given_shapes).build()
    element = ELEMENT_TYPE[builder.dtype]
    inputs = [value_info(name, builder.shapes[name], element, dynamic_batch)
              for name in builder.schedule.inputs]
    consumed = {b for layer in builder.layers for b in layer.bottoms}
    produced = [top for layer in builder.layers for top in layer.tops]
    output_names = [n for n in dict.fromkeys(produced) if n not in consumed or
                    n in builder.schedule.outputs]
    unknown = [name for name in output_names if name not in builder.schedule.inputs and name not in
               builder.shapes and builder.latest[name] not in builder.symbolic_shapes]
    if unknown:  # ONNX requires every graph output's shape (its rank at least)
        raise ExportError("the shapes of the outputs " + ", ".join(repr(n) for n in unknown)
                          + " are unknown: they come after a layer the engine cannot run or size; "
                          + builder.shape_hint())
    outputs = [value_info(builder.latest[name], builder.shapes[name], element, dynamic_batch)
               if name in builder.shapes else
               helper.make_tensor_value_info(builder.latest[name], element,
                                             builder.symbolic_shapes.get(builder.latest[name]))
               for name in output_names if name not in builder.schedule.inputs]
    return builder, inputs, outputs
