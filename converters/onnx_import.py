"""ONNX -> Caffe: map an ONNX graph onto Caffe layers where Caffe can express it.

Constant subgraphs (shape arithmetic and the like) are folded first with
onnx's reference evaluator. Every node that cannot become a Caffe layer is
reported at once, with its op type and position.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from blobcast.errors import FormatError
from blobcast.model import Blob, Layer, Model

from . import caffe_pb2 as pb
from .messages import message_from_pb
from .onnx_export import CUSTOM_DOMAIN, FUNCTION_DOMAIN, LAYER_ATTRIBUTE
from .onnx_fold import ConstantFolding, data_propagation_is_bounded, node_attributes
from .onnx_ops import IMPORTERS
from .onnx_ops.registry import Unsupported
from .onnx_simplify import simplify


class NoCaffeForm(FormatError):
    """Nodes of a valid ONNX graph that cannot become Caffe layers (`problems`
    names each, with its position and why)."""

    def __init__(self, message: str, path: str | None = None, problems=()):
        super().__init__(message, path)
        self.problems = list(problems) or [message]


def _layer_name(node_name: str) -> str:
    """A node's name as a Caffe layer's: torch's exporter writes paths
    ('/layer1/conv1/Conv'), and HDF5 snapshots store each layer as a group of
    that name, where a leading '/' is the file's root and '//' or '.' name no
    new group: such parts are dropped."""
    return "/".join(part for part in node_name.split("/") if part not in ("", "."))


class Importer(ConstantFolding):
    def __init__(self, onnx_model, initializers: dict, path: str):
        self.path = path
        self.model = onnx_model
        self.graph = onnx_model.graph
        self.opset = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.constants = dict(initializers)
        self.layers: list[Layer] = []
        self.names: set[str] = set()
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.alias: dict[str, str] = {}
        self.restored_blobs: dict[str, Blob] = {}  # initializer name -> its one (shared) blob
        self.inputs = [i for i in self.graph.input if i.name not in self.constants]
        self.shapes = self._infer_shapes()

    # -- helpers ------------------------------------------------------------------
    def _static_model(self, nodes=None):
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        if nodes is not None:  # after folding: the nodes left, the folded values as constants
            del model.graph.node[:]
            model.graph.node.extend(nodes)
        del model.graph.initializer[:]
        for name, value in self.constants.items():
            if isinstance(value, np.ndarray):  # shape inference may need the values
                model.graph.initializer.append(numpy_helper.from_array(value, name))
            else:  # large external data: its shape is enough
                model.graph.input.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(np.dtype(value.dtype)), list(value.shape)))
        for item in model.graph.input:
            for dim in item.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.dim_value = 1
        return model

    def _infer_shapes(self, nodes=None) -> dict:
        for item in self.inputs if nodes is None else ():
            dims = item.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                self.notes.append(f"input {item.name!r} has symbolic dimensions; they were set to 1")
                break
        static = self._static_model(nodes)
        propagate = data_propagation_is_bounded(static)
        try:
            inferred = onnx.shape_inference.infer_shapes(static, data_prop=propagate)
        except Exception as error:
            raise FormatError(f"ONNX shape inference failed: {error}", self.path) from error
        shapes = {}
        graph = inferred.graph
        for item in list(graph.value_info) + list(graph.input) + list(graph.output):
            dims = item.type.tensor_type.shape.dim
            if item.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                shapes[item.name] = tuple(d.dim_value for d in dims)
        return shapes

    def const(self, name: str):
        if not name:
            return None
        value = self.constants.get(name)
        if value is None:
            return None
        return np.asarray(value.numpy() if hasattr(value, "numpy") else value)

    def tensor(self, name: str):
        """A constant as stored: for external data, a lazy view of the file."""
        return self.constants.get(name) if name else None

    def shape(self, name: str) -> tuple:
        name = self.alias.get(name, name)
        if name not in self.shapes:
            raise Unsupported(f"the shape of {name!r} is not known")
        return self.shapes[name]

    def blob(self, name: str) -> str:
        return self.alias.get(name, name)

    def layer(self, node, kind: str, bottoms, tops, blobs=(), suffix: str = "", **settings) -> Layer:
        base = _layer_name(node.name) or f"{node.op_type}_{len(self.layers)}"
        name = base + suffix
        while name in self.names:
            name += "_"
        self.names.add(name)
        layer = Layer(name, kind, bottoms=[self.blob(b) for b in bottoms], tops=list(tops),
                      blobs=[b if isinstance(b, Blob) else Blob(b) for b in blobs], **settings)
        self.layers.append(layer)
        return layer

    # -- the graph ------------------------------------------------------------------
    def run(self) -> Model:
        model = Model()
        model.name = self.graph.name
        for item in self.inputs:
            shape = [d.dim_value if d.HasField("dim_value") else 1 for d in item.type.tensor_type.shape.dim]
            self.shapes.setdefault(item.name, tuple(shape))
            self.layers.append(Layer(f"input_{item.name}" if item.name in self.names else item.name,
                                     "Input", tops=[item.name],
                                     input_param={"shape": [{"dim": shape}]}))
            self.names.add(self.layers[-1].name)
        remaining = self.fold_constants()
        if len(remaining) < len(self.graph.node):
            # Shapes computed by the folded arithmetic (a Slice's ends, a
            # Reshape's target) are constants now: infer again from them.
            self.shapes.update(self._infer_shapes(remaining))
        self.consumers: dict[str, list] = {}
        for node in remaining:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.fused: set[int] = set()
        for position, node in enumerate(remaining):
            if id(node) in self.fused:
                continue
            if node.domain in (FUNCTION_DOMAIN, CUSTOM_DOMAIN) and any(
                    a.name == LAYER_ATTRIBUTE for a in node.attribute):
                try:
                    self.restore_layer(node)
                except Unsupported as error:
                    self.problems.append(f"#{position} {node.op_type} {node.name!r}: {error}")
                continue
            handler = IMPORTERS.get(node.op_type)
            if node.domain not in ("", "ai.onnx") or handler is None:
                self.problems.append(f"#{position} {node.op_type} {node.name!r}: no Caffe equivalent")
                continue
            try:
                handler(self, node, node_attributes(node))
            except Unsupported as error:
                self.problems.append(f"#{position} {node.op_type} {node.name!r}: {error}")
        if self.problems:
            raise NoCaffeForm(f"{len(self.problems)} ONNX node(s) cannot become Caffe layers: "
                              + "; ".join(self.problems), self.path, self.problems)
        self.layers = simplify(self.layers, {self.blob(output.name) for output in self.graph.output})
        self._expose_outputs()
        model.layers = self.layers
        model.source_format = "onnx"
        model.source_version = f"opset {self.opset}"
        model.notes = self.notes
        return model

    def restore_layer(self, node) -> Layer:
        """A Caffe layer that blobcast exported as one node (a function call or
        a custom node): its settings from the node's caffe_layer attribute,
        its bottoms, tops and blobs from the node's inputs and outputs."""
        raw = next(a.s for a in node.attribute if a.name == LAYER_ATTRIBUTE)
        try:
            spec = message_from_pb(pb.LayerParameter.FromString(raw))
        except Exception as error:  # protobuf raises several types on garbage
            raise Unsupported(f"its {LAYER_ATTRIBUTE} attribute is not a Caffe layer ({error})") from None
        layer = Layer(spec=spec)
        count = len(layer.bottoms)
        if count > len(node.input) or len(layer.tops) != len(node.output):
            raise Unsupported(f"its {LAYER_ATTRIBUTE} attribute does not match the node's inputs "
                              "and outputs")
        blobs = self.restored_blobs
        for name in node.input[count:]:
            value = self.tensor(name)
            if value is None:
                raise Unsupported(f"input {name!r} should be one of the layer's weights, a constant")
            blobs.setdefault(name, Blob(value))  # one initializer, one shared blob
            layer.blobs.append(blobs[name])
        layer.spec.bottom = [self.blob(b) for b in node.input[:count]]
        layer.spec.top = list(node.output)
        while layer.name in self.names:
            layer.name += "_"
        self.names.add(layer.name)
        self.layers.append(layer)
        return layer

    def _expose_outputs(self):
        outputs = [output.name for output in self.graph.output]
        for name in outputs:
            source = self.blob(name)
            if source == name:
                continue
            # An alias of another blob: a blob only its makers name (an
            # exporter's inner name) takes the ONNX name; one other layers
            # read keeps its own, and a Split copies it.
            used = {b for layer in self.layers for b in layer.bottoms + layer.tops}
            producers = [layer for layer in self.layers if source in layer.tops]
            read = any(source in layer.bottoms and source not in layer.tops for layer in self.layers)
            shared = source in [self.blob(other) for other in outputs if other != name]
            if name in used or shared or read or not producers or producers[0].type == "Input":
                self.layers.append(Layer(f"{name}_output", "Split", bottoms=[source], tops=[name]))
                continue
            for layer in self.layers:
                layer.spec.bottom = [name if b == source else b for b in layer.bottoms]
                layer.spec.top = [name if t == source else t for t in layer.tops]
            self.alias = {k: (name if v == source else v) for k, v in self.alias.items()}

    # -- ops ----------------------------------------------------------------------------
    def spatial(self, node, attrs, weight_shape=None, symmetric: bool = True):
        ndim = len(self.shape(node.input[0])) - 2
        kernel = list(attrs.get("kernel_shape") or (weight_shape[2:] if weight_shape else []))
        strides = list(attrs.get("strides", [1] * ndim))
        dilations = list(attrs.get("dilations", [1] * ndim))
        pads = list(attrs.get("pads", [0] * 2 * ndim))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            raise Unsupported(f"auto_pad {auto_pad} is not supported; give explicit pads")
        if symmetric and pads[:ndim] != pads[ndim:]:
            raise Unsupported(f"asymmetric pads {pads}: Caffe pads both sides equally")
        return kernel, strides, pads if not symmetric else pads[:ndim], dilations

    @staticmethod
    def repeated(values):
        return [values[0]] if len(set(values)) == 1 else list(values)

def import_model(onnx_model, initializers: dict, path: str) -> Model:
    return Importer(onnx_model, initializers, path).run()

