"""ONNX -> Caffe: map an ONNX graph onto Caffe layers where Caffe can express it.

Constant subgraphs (shape arithmetic and the like) are folded first with
onnx's reference evaluator. Every node that cannot become a Caffe layer is
reported at once, with its op type and position.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from blobcast.errors import FormatError
from blobcast.layers.pooling import average_divisor, pooled_size
from blobcast.model import Blob, Layer, Model

from .onnx_fold import ConstantFolding, _attributes


class Unsupported(Exception):
    pass


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
        self.inputs = [i for i in self.graph.input if i.name not in self.constants]
        self.shapes = self._infer_shapes()

    # -- helpers ------------------------------------------------------------------
    def _static_model(self):
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
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

    def _infer_shapes(self) -> dict:
        for item in self.inputs:
            dims = item.type.tensor_type.shape.dim
            if any(not d.HasField("dim_value") for d in dims):
                self.notes.append(f"input {item.name!r} has symbolic dimensions; they were set to 1")
                break
        try:
            inferred = onnx.shape_inference.infer_shapes(self._static_model(), data_prop=True)
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
        base = node.name or f"{node.op_type}_{len(self.layers)}"
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
        self.consumers: dict[str, list] = {}
        for node in remaining:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.fused: set[int] = set()
        for position, node in enumerate(remaining):
            if id(node) in self.fused:
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if node.domain not in ("", "ai.onnx") or handler is None:
                self.problems.append(f"#{position} {node.op_type} {node.name!r}: no Caffe equivalent")
                continue
            try:
                handler(node, _attributes(node))
            except Unsupported as error:
                self.problems.append(f"#{position} {node.op_type} {node.name!r}: {error}")
        if self.problems:
            raise FormatError(f"{len(self.problems)} ONNX node(s) cannot become Caffe layers: "
                              + "; ".join(self.problems), self.path)
        self._expose_outputs()
        model.layers = self.layers
        model.source_format = "onnx"
        model.source_version = f"opset {self.opset}"
        model.notes = self.notes
        return model

    def _expose_outputs(self):
        for output in self.graph.output:
            source = self.blob(output.name)
            if source != output.name:  # an alias of another blob: copy it under the ONNX name
                self.layers.append(Layer(f"{output.name}_output", "Split", bottoms=[source],
                                         tops=[output.name]))

    # -- ops ----------------------------------------------------------------------------
    def _spatial(self, node, attrs, weight_shape=None, symmetric: bool = True):
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
    def _repeated(values):
        return [values[0]] if len(set(values)) == 1 else list(values)

    def _op_Conv(self, node, attrs):
        weight = self.tensor(node.input[1])
        if weight is None:
            raise Unsupported("the weights must be constant")
        kernel, strides, pads, dilations = self._spatial(node, attrs, weight.shape)
        bias = self.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        blobs = [weight] + ([bias] if bias is not None else [])
        self.layer(node, "Convolution", [node.input[0]], [node.output[0]], blobs,
                   convolution_param={"num_output": weight.shape[0], "kernel_size": self._repeated(kernel),
                                      "stride": self._repeated(strides), "pad": self._repeated(pads),
                                      "dilation": self._repeated(dilations),
                                      "group": attrs.get("group", 1), "bias_term": bias is not None})

    def _op_ConvTranspose(self, node, attrs):
        weight = self.tensor(node.input[1])
        if weight is None:
            raise Unsupported("the weights must be constant")
        if any(attrs.get("output_padding", [])) or "output_shape" in attrs:
            raise Unsupported("output_padding/output_shape have no Caffe equivalent")
        kernel, strides, pads, dilations = self._spatial(node, attrs, weight.shape)
        bias = self.tensor(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        group = attrs.get("group", 1)
        self.layer(node, "Deconvolution", [node.input[0]], [node.output[0]],
                   [weight] + ([bias] if bias is not None else []),
                   convolution_param={"num_output": weight.shape[1] * group,
                                      "kernel_size": self._repeated(kernel),
                                      "stride": self._repeated(strides),
                                      "pad": self._repeated(pads), "dilation": self._repeated(dilations),
                                      "group": group, "bias_term": bias is not None})

    def _pool(self, node, attrs, method):
        shape = self.shape(node.input[0])
        if len(shape) != 4:
            raise Unsupported("Caffe pools 4-D blobs only")
        kernel, strides, all_pads, dilations = self._spatial(node, attrs, symmetric=False)
        pads, ends = all_pads[:2], all_pads[2:]
        if any(d != 1 for d in dilations):
            raise Unsupported("dilated pooling has no Caffe equivalent")
        include_pad = attrs.get("count_include_pad", 0)
        if method == "AVE" and not include_pad and any(pads):
            raise Unsupported("count_include_pad=0 with padding differs from Caffe's divisor")
        wanted = self.shape(node.output[0])[2:]
        output = node.output[0]
        if ends != pads:
            # Extra end padding (how Caffe's ceil rounding is written in ONNX) never
            # changes a max; an average is the same while no window reaches past
            # Caffe's own padding, where the divisors would differ, unless a
            # constant correction of the divisor follows (as blobcast writes it).
            reach = [(o - 1) * s + k - p for o, s, k, p in zip(wanted, strides, kernel, pads)]
            overhang = any(r > n + p for r, n, p in zip(reach, shape[2:], pads))
            if method == "AVE" and overhang and include_pad:
                correction = self._divisor_correction(node, shape[2:], kernel, strides, pads, wanted)
                if correction is None:
                    raise Unsupported(f"average pooling with end pads {ends} beyond Caffe's padding")
                self.fused.add(id(correction))
                output = correction.output[0]
        for mode in ("CEIL", "FLOOR"):
            got = tuple(pooled_size(n, k, s, p, mode == "CEIL")
                        for n, k, s, p in zip(shape[2:], kernel, strides, pads))
            if got == tuple(wanted):
                break
        else:
            raise Unsupported(f"Caffe's pooling cannot produce the output size {list(wanted)}")
        settings = {"pool": method, "kernel_h": kernel[0], "kernel_w": kernel[1],
                    "stride_h": strides[0], "stride_w": strides[1], "pad_h": pads[0], "pad_w": pads[1]}
        if mode == "FLOOR":
            settings["round_mode"] = "FLOOR"
        self.layer(node, "Pooling", [node.input[0]], [output], pooling_param=settings)

    def _divisor_correction(self, node, size, kernel, strides, pads, out):
        """The Mul by Caffe's divisor correction that follows an overhanging
        AveragePool, if there is exactly that."""
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            return None
        mul = users[0]
        other = mul.input[1] if mul.input[0] == node.output[0] else mul.input[0]
        factor = self.const(other)
        expected = (kernel[0] * kernel[1]) / average_divisor(np, size, kernel, strides, pads, out)
        if factor is None or factor.size != expected.size or not np.allclose(
                factor.reshape(expected.shape), expected, rtol=1e-6):
            return None
        return mul

    def _op_MaxPool(self, node, attrs):
        if len(node.output) > 1 and node.output[1]:
            raise Unsupported("the indices output has no Caffe equivalent")
        self._pool(node, attrs, "MAX")

    def _op_AveragePool(self, node, attrs):
        self._pool(node, attrs, "AVE")

    def _op_GlobalAveragePool(self, node, attrs):
        self.layer(node, "Pooling", [node.input[0]], [node.output[0]],
                   pooling_param={"pool": "AVE", "global_pooling": True})

    def _op_GlobalMaxPool(self, node, attrs):
        self.layer(node, "Pooling", [node.input[0]], [node.output[0]],
                   pooling_param={"pool": "MAX", "global_pooling": True})

    def _op_Gemm(self, node, attrs):
        weight = self.tensor(node.input[1])
        if weight is None or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            raise Unsupported("only x @ W (+ b) with a constant W and alpha = beta = 1")
        transposed = not attrs.get("transB", 0)
        outputs = weight.shape[1] if transposed else weight.shape[0]
        bias = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        blobs = [weight]
        if bias is not None:
            blobs.append(np.broadcast_to(bias, (outputs,)).astype(bias.dtype).reshape(outputs))
        self.layer(node, "InnerProduct", [node.input[0]], [node.output[0]], blobs,
                   inner_product_param={"num_output": outputs, "bias_term": bias is not None,
                                        "transpose": transposed})

    def _op_MatMul(self, node, attrs):
        weight = self.tensor(node.input[1])
        if weight is None or len(weight.shape) != 2:
            raise Unsupported("only x @ W with a constant 2-D W")
        ndim = len(self.shape(node.input[0]))
        self.layer(node, "InnerProduct", [node.input[0]], [node.output[0]], [weight],
                   inner_product_param={"num_output": weight.shape[1], "bias_term": False,
                                        "transpose": True, "axis": ndim - 1})

    def _unary(kind, **settings):
        def handler(self, node, attrs):
            self.layer(node, kind, [node.input[0]], [node.output[0]], **settings)

        return handler

    _op_Relu = _unary("ReLU")
    _op_Sigmoid = _unary("Sigmoid")
    _op_Tanh = _unary("TanH")
    _op_Abs = _unary("AbsVal")
    _op_Exp = _unary("Exp")
    _op_Log = _unary("Log")
    _op_Softplus = _unary("BNLL")
    _op_Sqrt = _unary("Power", power_param={"power": 0.5})
    _op_Neg = _unary("Power", power_param={"scale": -1.0})
    _op_Reciprocal = _unary("Power", power_param={"power": -1.0})

    def _op_LeakyRelu(self, node, attrs):
        self.layer(node, "ReLU", [node.input[0]], [node.output[0]],
                   relu_param={"negative_slope": attrs.get("alpha", 0.01)})

    def _op_Elu(self, node, attrs):
        self.layer(node, "ELU", [node.input[0]], [node.output[0]],
                   elu_param={"alpha": attrs.get("alpha", 1.0)})

    def _op_PRelu(self, node, attrs):
        slope = self.const(node.input[1])
        if slope is None:
            raise Unsupported("the slope must be constant")
        if slope.size == 1:
            self.layer(node, "PReLU", [node.input[0]], [node.output[0]], [slope.reshape(())],
                       prelu_param={"channel_shared": True})
            return
        channels = self.shape(node.input[0])[1]
        if slope.size != channels:
            raise Unsupported("the slope must be per channel or shared")
        self.layer(node, "PReLU", [node.input[0]], [node.output[0]], [slope.reshape(channels)])

    def _op_Clip(self, node, attrs):
        low = self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("min")
        high = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else attrs.get("max")
        low = None if low is None else float(np.asarray(low).reshape(()))
        high = None if high is None else float(np.asarray(high).reshape(()))
        if low == 0 and high is None:
            self.layer(node, "ReLU", [node.input[0]], [node.output[0]])
            return
        limit = float(np.finfo(np.float32).max)
        self.layer(node, "Clip", [node.input[0]], [node.output[0]],
                   clip_param={"min": -limit if low is None else low, "max": limit if high is None else high})

    def _op_BatchNormalization(self, node, attrs):
        if attrs.get("training_mode", 0):
            raise Unsupported("training-mode BatchNormalization")
        scale, bias, mean, variance = (self.tensor(n) for n in node.input[1:5])
        if any(v is None for v in (scale, bias, mean, variance)):
            raise Unsupported("scale, bias, mean and variance must be constant")
        out = node.output[0]
        dtype = np.dtype(mean.dtype)
        self.layer(node, "BatchNorm", [node.input[0]], [out],
                   [mean, variance, np.ones(1, dtype)],
                   batch_norm_param={"use_global_stats": True, "eps": attrs.get("epsilon", 1e-5)})
        self.layer(node, "Scale", [out], [out], [scale, bias], suffix="/scale",
                   scale_param={"bias_term": True})

    def _constant_span(self, values, shape):
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

    def _binary(self, node, op):
        a, b = node.input[0], node.input[1]
        ca, cb = self.const(a), self.const(b)
        out = node.output[0]
        if ca is None and cb is None:
            if self.shape(a) != self.shape(b):
                raise Unsupported("inputs of different shapes (broadcasting) have no Caffe equivalent")
            if op == "Div":
                raise Unsupported("division of two tensors has no Caffe equivalent")
            settings = {"operation": "PROD"} if op == "Mul" else {}
            if op == "Sub":
                settings["coeff"] = [1.0, -1.0]
            self.layer(node, "Eltwise", [a, b], [out], eltwise_param=settings)
            return
        if ca is not None and cb is not None:
            raise Unsupported("both inputs constant")
        constant_first = ca is not None
        value, x = (ca, b) if constant_first else (cb, a)
        if constant_first and op in ("Sub", "Div"):
            if op == "Div" or value.size != 1:
                raise Unsupported("a constant divided by (or minus) a tensor")
            self.layer(node, "Power", [x], [out],
                       power_param={"scale": -1.0, "shift": float(value.reshape(()))})
            return
        if op == "Div":
            value = (1.0 / value.astype(np.float64)).astype(value.dtype)
        if op == "Sub":
            value = -value
        if value.size == 1:
            scalar = float(value.reshape(()))
            param = {"scale": scalar} if op in ("Mul", "Div") else {"shift": scalar}
            self.layer(node, "Power", [x], [out], power_param=param)
            return
        span = self._constant_span(value, self.shape(x))
        if span is None:
            raise Unsupported("a constant of ones")
        axis, count, squeezed = span
        kind = "Scale" if op in ("Mul", "Div") else "Bias"
        key = "scale_param" if kind == "Scale" else "bias_param"
        self.layer(node, kind, [x], [out], [squeezed.astype(np.float32) if squeezed.dtype != np.float64
                                            else squeezed], **{key: {"axis": axis, "num_axes": count}})

    def _op_Add(self, node, attrs):
        self._binary(node, "Add")

    def _op_Sub(self, node, attrs):
        self._binary(node, "Sub")

    def _op_Mul(self, node, attrs):
        self._binary(node, "Mul")

    def _op_Div(self, node, attrs):
        self._binary(node, "Div")

    def _op_Pow(self, node, attrs):
        exponent = self.const(node.input[1])
        if exponent is None or exponent.size != 1 or self.const(node.input[0]) is not None:
            raise Unsupported("only a tensor to a constant scalar power")
        self.layer(node, "Power", [node.input[0]], [node.output[0]],
                   power_param={"power": float(exponent.reshape(()))})

    def _op_Tile(self, node, attrs):
        repeats = self.const(node.input[1])
        if repeats is None:
            raise Unsupported("the repeats must be constant")
        tiled = [axis for axis, count in enumerate(repeats) if count != 1]
        if len(tiled) > 1:
            raise Unsupported("tiling more than one axis")
        if not tiled:
            self._identity(node, attrs)
            return
        self.layer(node, "Tile", [node.input[0]], [node.output[0]],
                   tile_param={"axis": tiled[0], "tiles": int(repeats[tiled[0]])})

    def _op_Sum(self, node, attrs):
        self.layer(node, "Eltwise", list(node.input), [node.output[0]])

    def _op_Max(self, node, attrs):
        self.layer(node, "Eltwise", list(node.input), [node.output[0]], eltwise_param={"operation": "MAX"})

    def _op_Concat(self, node, attrs):
        axis = attrs["axis"] % len(self.shape(node.input[0]))
        self.layer(node, "Concat", list(node.input), [node.output[0]], concat_param={"axis": axis})

    def _op_Split(self, node, attrs):
        shape = self.shape(node.input[0])
        axis = attrs.get("axis", 0) % len(shape)
        sizes = [self.shape(o)[axis] for o in node.output]
        points = list(np.cumsum(sizes)[:-1])
        self.layer(node, "Slice", [node.input[0]], list(node.output),
                   slice_param={"axis": axis, "slice_point": [int(p) for p in points]})

    def _op_Slice(self, node, attrs):
        shape = self.shape(node.input[0])
        starts, ends = self.const(node.input[1]), self.const(node.input[2])
        axes = self.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
        steps = self.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts))
        if starts is None or ends is None or axes is None or steps is None or np.any(steps != 1):
            raise Unsupported("only constant slices with step 1")
        cut = [(int(a) % len(shape), int(s), int(e)) for a, s, e in zip(axes, starts, ends)]
        cut = [(a, max(0, s + shape[a] if s < 0 else s), min(shape[a], e + shape[a] if e < 0 else e))
               for a, s, e in cut]
        cut = [c for c in cut if (c[1], c[2]) != (0, shape[c[0]])]
        if len(cut) != 1:
            raise Unsupported("slicing more than one axis has no Caffe equivalent")
        axis, start, stop = cut[0]
        points = [p for p in (start, stop) if 0 < p < shape[axis]]
        tops, keep = [], None
        bounds = [0, *points, shape[axis]]
        for i, (low, high) in enumerate(zip(bounds, bounds[1:])):
            if (low, high) == (start, stop):
                tops.append(node.output[0])
                keep = i
            else:
                tops.append(f"{node.output[0]}/unused{i}")
        if keep is None:
            raise Unsupported("an empty slice")
        self.layer(node, "Slice", [node.input[0]], tops, slice_param={"axis": axis, "slice_point": points})
        unused = [t for i, t in enumerate(tops) if i != keep]
        if unused:
            self.layer(node, "Silence", unused, [], suffix="/silence")

    def _reshape(self, node, attrs=None):
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        dims = list(out_shape)
        if dims and in_shape and dims[0] == in_shape[0]:
            dims[0] = 0  # keep the batch size, whatever it is
        self.layer(node, "Reshape", [node.input[0]], [node.output[0]], reshape_param={"shape": {"dim": dims}})

    _op_Reshape = _reshape
    _op_Flatten = _reshape
    _op_Squeeze = _reshape
    _op_Unsqueeze = _reshape

    def _op_Transpose(self, node, attrs):
        shape = self.shape(node.input[0])
        perm = list(attrs.get("perm", reversed(range(len(shape)))))
        moved = [axis for position, axis in enumerate(perm) if axis != position]
        if not moved:
            self.alias[node.output[0]] = self.blob(node.input[0])
            return
        order_of_real = [a for a in perm if shape[a] != 1]
        if order_of_real != sorted(order_of_real):
            raise Unsupported("a transpose that reorders data needs a Permute layer")
        self._reshape(node)

    def _op_Softmax(self, node, attrs):
        ndim = len(self.shape(node.input[0]))
        axis = attrs.get("axis", -1 if self.opset >= 13 else 1) % ndim
        if self.opset < 13 and axis != ndim - 1:
            raise Unsupported("before opset 13, Softmax flattens the trailing axes")
        self.layer(node, "Softmax", [node.input[0]], [node.output[0]], softmax_param={"axis": axis})

    def _identity(self, node, attrs):
        self.alias[node.output[0]] = self.blob(node.input[0])

    _op_Identity = _identity
    _op_Dropout = _identity

    def _op_Cast(self, node, attrs):
        if attrs.get("to") in (TensorProto.FLOAT, TensorProto.DOUBLE):
            self._identity(node, attrs)
            return
        raise Unsupported("casts to non-float types")

    def _op_LRN(self, node, attrs):
        size = attrs["size"]
        if size % 2 == 0:
            raise Unsupported("an even LRN size")
        self.layer(node, "LRN", [node.input[0]], [node.output[0]],
                   lrn_param={"local_size": size, "alpha": attrs.get("alpha", 1e-4),
                              "beta": attrs.get("beta", 0.75), "k": attrs.get("bias", 1.0)})

    def _op_Resize(self, node, attrs):
        mode = attrs.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        in_shape, out_shape = self.shape(node.input[0]), self.shape(node.output[0])
        if mode != "nearest" or len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
            raise Unsupported("only nearest upsampling of height and width")
        factors = [o // i for i, o in zip(in_shape[2:], out_shape[2:])]
        if any(o != i * f for i, o, f in zip(in_shape[2:], out_shape[2:], factors)) or min(factors) < 1:
            raise Unsupported("only whole-number scale factors")
        channels = in_shape[1]
        # Nearest upsampling by whole factors is a grouped deconvolution with ones.
        weight = np.ones((channels, 1, factors[0], factors[1]), np.float32)
        self.layer(node, "Deconvolution", [node.input[0]], [node.output[0]], [weight],
                   param=[{"lr_mult": 0.0, "decay_mult": 0.0}],
                   convolution_param={"num_output": channels, "group": channels, "bias_term": False,
                                      "kernel_h": factors[0], "kernel_w": factors[1],
                                      "stride_h": factors[0], "stride_w": factors[1]})

    _op_Upsample = _op_Resize

    def _reduce(self, node, attrs, operation):
        shape = self.shape(node.input[0])
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1])
        axes = sorted(int(a) % len(shape) for a in (range(len(shape)) if axes is None else axes))
        keepdims = attrs.get("keepdims", 1)
        if operation == "MEAN" and axes == [2, 3] and len(shape) == 4 and keepdims:
            self.layer(node, "Pooling", [node.input[0]], [node.output[0]],
                       pooling_param={"pool": "AVE", "global_pooling": True})
            return
        if axes != list(range(axes[0], len(shape))) or keepdims:
            raise Unsupported("only reductions over all trailing axes without keepdims")
        self.layer(node, "Reduction", [node.input[0]], [node.output[0]],
                   reduction_param={"operation": operation, "axis": axes[0]})

    def _op_ReduceMean(self, node, attrs):
        self._reduce(node, attrs, "MEAN")

    def _op_ReduceSum(self, node, attrs):
        self._reduce(node, attrs, "SUM")

    def _op_ReduceL1(self, node, attrs):
        self._reduce(node, attrs, "ASUM")

    def _op_ReduceSumSquare(self, node, attrs):
        self._reduce(node, attrs, "SUMSQ")


def import_model(onnx_model, initializers: dict, path: str) -> Model:
    return Importer(onnx_model, initializers, path).run()


