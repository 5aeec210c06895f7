"""Caffe -> ONNX: one handler per Caffe layer type, with Caffe's exact semantics.

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
from onnx import TensorProto, helper

from blobcast.engine import blob_shapes, check_has_weights
from blobcast.errors import BlobcastError, BlobcastWarning
from blobcast.layers.activation import exp_factors, log_factor
from blobcast.layers.convolution import spatial_settings
from blobcast.layers.pooling import average_divisor, pool_geometry, spp_levels
from blobcast.model import Model

CUSTOM_DOMAIN = "ai.blobcast"
DEFAULT_OPSET = 26  # the newest opset onnxruntime 1.31 runs
MIN_OPSET = 17
_ELEMENT_TYPE = {np.dtype("<f4"): TensorProto.FLOAT, np.dtype("<f8"): TensorProto.DOUBLE}


class ExportError(BlobcastError):
    pass


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
            handler = getattr(self, f"_layer_{layer.type}", None)
            if handler is None:
                self._custom(layer, ins, outs)
            else:
                check_has_weights(layer)
                handler(layer, ins, outs)
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

    def _reshape_target(self, in_blob: str, out_shape) -> list[int]:
        target = list(out_shape)
        if self.dynamic_batch and target:
            target[0] = -1  # the (symbolic) batch size: whatever the other dims leave
        return target

    def _reduce(self, op: str, data: str, axes: list[int], keepdims: int, output: str, name: str):
        axes_as_input = op == "ReduceSum" or self.opset >= 18
        if axes_as_input:
            axes_name = self.constant(name.split("/")[0], axes, np.int64, "axes")
            return self.node(op, [data, axes_name], [output], name, keepdims=keepdims)
        return self.node(op, [data], [output], name, axes=axes, keepdims=keepdims)

    # -- layer handlers ---------------------------------------------------------
    def _layer_Convolution(self, layer, ins, outs):
        p = layer.type_params
        kernel, stride, pad, dilation = spatial_settings(p, len(self.shape(layer.bottoms[0])) - 2,
                                                         layer.name)
        if p.axis != 1:
            raise ExportError(f"layer {layer.name!r}: convolution axis {p.axis} is not exported")
        inputs = ins + [self.weight(layer, 0)] + ([self.weight(layer, 1)] if p.bias_term else [])
        self.node("Conv", inputs, outs, layer.name, kernel_shape=list(kernel), strides=list(stride),
                  pads=list(pad) * 2, dilations=list(dilation), group=p.group)

    def _layer_Deconvolution(self, layer, ins, outs):
        p = layer.type_params
        kernel, stride, pad, dilation = spatial_settings(p, len(self.shape(layer.bottoms[0])) - 2,
                                                         layer.name)
        inputs = ins + [self.weight(layer, 0)] + ([self.weight(layer, 1)] if p.bias_term else [])
        self.node("ConvTranspose", inputs, outs, layer.name, kernel_shape=list(kernel),
                  strides=list(stride), pads=list(pad) * 2, dilations=list(dilation), group=p.group)

    def _pool_settings(self, layer):
        height, width = self.shape(layer.bottoms[0])[2:]
        try:
            geometry = pool_geometry(layer.type_params, height, width)
        except ValueError as error:
            raise ExportError(f"layer {layer.name!r}: {error}") from None
        return None if geometry is None else (*geometry, (height, width))

    def _emit_pool(self, layer, source, output, method, kernel, stride, pad, out, size, step=None):
        """Caffe pooling as ONNX floor-mode pooling with explicit end padding."""
        name = layer.name if step is None else f"{layer.name}/{step}"
        ends = []
        for n, k, s, p, o in zip(size, kernel, stride, pad, out):
            end = max(0, (o - 1) * s + k - n - p)
            if (n + p + end - k) // s + 1 != o:
                raise ExportError(f"layer {layer.name!r}: cannot express Caffe's pooled size {o}")
            ends.append(end)
        pads = list(pad) + ends
        common = {"kernel_shape": list(kernel), "strides": list(stride), "pads": pads}
        if method == "MAX":
            return self.node("MaxPool", [source], [output], name, **common)
        if method == "AVE":
            overhang = any(e > p for e, p in zip(ends, pad))
            if not overhang:
                return self.node("AveragePool", [source], [output], name, count_include_pad=1, **common)
            if not any(pad):
                # Without padding Caffe's divisor counts just the real elements.
                return self.node("AveragePool", [source], [output], name, count_include_pad=0, **common)
            # Windows past the padding: Caffe divides by the window minus the overhang.
            pooled = self.node("AveragePool", [source], [f"{name}/sum_over_area"], f"{name}/pool",
                               count_include_pad=1, **common)
            factor = (kernel[0] * kernel[1]) / average_divisor(np, size, kernel, stride, pad, out)
            scale = self.constant(layer.name, factor.reshape(1, 1, *out), role="divisor")
            return self.node("Mul", [pooled, scale], [output], name)
        # STOCHASTIC at test time: sum(x^2) / sum(x), 0 where the sum is not positive.
        squares = self.node("Mul", [source, source], [f"{name}/squares"], f"{name}/square")
        top = self.node("AveragePool", [squares], [f"{name}/mean_squares"], f"{name}/pool_squares",
                        count_include_pad=1, **common)
        bottom = self.node("AveragePool", [source], [f"{name}/mean"], f"{name}/pool", count_include_pad=1,
                           **common)
        zero = self.constant(layer.name, 0.0, role="zero")
        positive = self.node("Greater", [bottom, zero], [f"{name}/positive"], f"{name}/positive")
        one = self.constant(layer.name, 1.0, role="one")
        safe = self.node("Where", [positive, bottom, one], [f"{name}/safe"], f"{name}/safe")
        ratio = self.node("Div", [top, safe], [f"{name}/ratio"], f"{name}/ratio")
        return self.node("Where", [positive, ratio, zero], [output], name)

    def _layer_Pooling(self, layer, ins, outs):
        settings = self._pool_settings(layer)
        method = layer.type_params.pool
        if settings is None:
            if method == "STOCHASTIC":
                raise ExportError(f"layer {layer.name!r}: global STOCHASTIC pooling is not exported")
            op = "GlobalMaxPool" if method == "MAX" else "GlobalAveragePool"
            self.node(op, ins, outs, layer.name)
            return
        self._emit_pool(layer, ins[0], outs[0], method, *settings)

    def _layer_SPP(self, layer, ins, outs):
        p = layer.type_params
        height, width = self.shape(layer.bottoms[0])[2:]
        pieces = []
        for level, (kernel, pad, out) in enumerate(spp_levels(height, width, p.pyramid_height)):
            target = outs[0] if p.pyramid_height == 1 else f"{layer.name}/level{level}"
            pooled = self._emit_pool(layer, ins[0], target, p.pool, kernel, kernel, pad, out,
                                     (height, width), step=None if p.pyramid_height == 1 else f"level{level}")
            if p.pyramid_height == 1:
                return
            pieces.append(self.node("Flatten", [pooled], [f"{layer.name}/flat{level}"],
                                    f"{layer.name}/flatten{level}", axis=1))
        self.node("Concat", pieces, outs, layer.name, axis=1)

    def _layer_InnerProduct(self, layer, ins, outs):
        p = layer.type_params
        in_shape = self.shape(layer.bottoms[0])
        axis = p.axis % len(in_shape)
        flat = self.node("Flatten", ins, [f"{layer.name}/flat"], f"{layer.name}/flatten", axis=axis)
        gemm_inputs = [flat, self.weight(layer, 0)] + ([self.weight(layer, 1)] if p.bias_term else [])
        out_shape = self.shape(layer.tops[0])
        if axis == 1:
            self.node("Gemm", gemm_inputs, outs, layer.name, transB=0 if p.transpose else 1)
            return
        product = self.node("Gemm", gemm_inputs, [f"{layer.name}/gemm"], f"{layer.name}/gemm",
                            transB=0 if p.transpose else 1)
        target = self.constant(layer.name, self._reshape_target(layer.bottoms[0], out_shape), np.int64,
                               "shape")
        self.node("Reshape", [product, target], outs, layer.name)

    def _layer_BatchNorm(self, layer, ins, outs):
        p = layer.type_params
        if p.has("use_global_stats") and not p.use_global_stats:
            raise ExportError(f"layer {layer.name!r}: BatchNorm with batch statistics "
                              "(use_global_stats: false) is not exported")
        mean, variance, factor = (b.data.numpy() for b in layer.blobs[:3])
        factor = float(factor.reshape(-1)[0])
        factor = np.float32(0.0 if factor == 0 else 1.0 / factor).astype(mean.dtype)
        channels = mean.shape[0]
        gamma = np.ones(channels, mean.dtype)
        beta = np.zeros(channels, mean.dtype)
        self.node("BatchNormalization",
                  ins + [self.constant(layer.name, gamma, role="scale"),
                         self.constant(layer.name, beta, role="bias"),
                         self.constant(layer.name, mean * factor, role="mean"),
                         self.constant(layer.name, variance * factor, role="var")],
                  outs, layer.name, epsilon=float(np.float32(p.eps)))

    def _broadcast(self, layer, index, in_blob, axis) -> str:
        values = layer.blobs[index].data.numpy()
        ndim = len(self.shape(in_blob))
        if values.size == 1 and values.ndim <= 1 and self.shape(in_blob)[axis:axis + 1] != (1,):
            return self.weight(layer, index, values.reshape(()))
        return self.weight(layer, index, values.reshape(values.shape + (1,) * (ndim - axis - values.ndim)))

    def _second_bottom(self, layer, ins, in_shape, axis, role: str) -> str:
        """Scale's or Bias's second bottom, reshaped to broadcast from `axis`."""
        other = self.shape(layer.bottoms[1])
        target = list(other) + [1] * (len(in_shape) - axis - len(other))
        if self.dynamic_batch and axis == 0 and target:
            target[0] = -1
        return self.node("Reshape", [ins[1], self.constant(layer.name, target, np.int64, "shape")],
                         [f"{layer.name}/{role}"], f"{layer.name}/reshape")

    def _layer_Scale(self, layer, ins, outs):
        p = layer.type_params
        in_shape = self.shape(layer.bottoms[0])
        axis = p.axis % len(in_shape) if in_shape else 0
        if len(ins) == 2:
            scale, bias_index = self._second_bottom(layer, ins, in_shape, axis, "scale"), 0
        else:
            scale, bias_index = self._broadcast(layer, 0, layer.bottoms[0], axis), 1
        if not p.bias_term:
            self.node("Mul", [ins[0], scale], outs, layer.name)
            return
        product = self.node("Mul", [ins[0], scale], [f"{layer.name}/product"], f"{layer.name}/mul")
        bias_values = layer.blobs[bias_index].data.numpy()
        ndim = len(in_shape)
        if len(ins) == 2:
            bias = self.weight(layer, bias_index, bias_values.reshape(
                self.shape(layer.bottoms[1]) + (1,) * (ndim - axis - len(self.shape(layer.bottoms[1])))))
        else:
            bias = self._broadcast(layer, bias_index, layer.bottoms[0], axis)
        self.node("Add", [product, bias], outs, layer.name)

    def _layer_Bias(self, layer, ins, outs):
        p = layer.type_params
        in_shape = self.shape(layer.bottoms[0])
        axis = p.axis % len(in_shape) if in_shape else 0
        if len(ins) == 2:
            bias = self._second_bottom(layer, ins, in_shape, axis, "bias")
        else:
            bias = self._broadcast(layer, 0, layer.bottoms[0], axis)
        self.node("Add", [ins[0], bias], outs, layer.name)

    def _layer_ReLU(self, layer, ins, outs):
        slope = layer.type_params.negative_slope
        if slope:
            self.node("LeakyRelu", ins, outs, layer.name, alpha=float(np.float32(slope)))
        else:
            self.node("Relu", ins, outs, layer.name)

    def _layer_PReLU(self, layer, ins, outs):
        values = layer.blobs[0].data.numpy()
        ndim = len(self.shape(layer.bottoms[0]))
        if layer.type_params.channel_shared:
            slope = self.weight(layer, 0, values.reshape(1))
        else:
            slope = self.weight(layer, 0, values.reshape((-1,) + (1,) * (ndim - 2)))
        self.node("PRelu", ins + [slope], outs, layer.name)

    def _layer_ELU(self, layer, ins, outs):
        self.node("Elu", ins, outs, layer.name, alpha=float(np.float32(layer.type_params.alpha)))

    def _simple(op):
        def handler(self, layer, ins, outs):
            self.node(op, ins, outs, layer.name)

        return handler

    _layer_Sigmoid = _simple("Sigmoid")
    _layer_TanH = _simple("Tanh")
    _layer_AbsVal = _simple("Abs")
    _layer_BNLL = _simple("Softplus")
    _layer_Dropout = _simple("Identity")

    def _layer_Power(self, layer, ins, outs):
        p = layer.type_params
        power, scale, shift = (np.float32(v) for v in (p.power, p.scale, p.shift))
        if power * scale == 0:
            value = np.float32(1) if power == 0 else np.float32(shift) ** power
            shape = self.node("Shape", ins, [f"{layer.name}/shape"], f"{layer.name}/shape")
            self.node("Expand", [self.constant(layer.name, value), shape], outs, layer.name)
            return
        steps = []
        if scale != 1:
            steps.append(("Mul", scale))
        if shift != 0:
            steps.append(("Add", shift))
        if power != 1:
            steps.append(("Pow", power))
        if not steps:
            self.node("Identity", ins, outs, layer.name)
            return
        current = ins[0]
        for i, (op, value) in enumerate(steps):
            last = i == len(steps) - 1
            current = self.node(op, [current, self.constant(layer.name, value)],
                                outs if last else [f"{layer.name}/{op.lower()}"],
                                layer.name if last else f"{layer.name}/{op.lower()}")

    def _layer_Exp(self, layer, ins, outs):
        inner, outer = exp_factors(layer.type_params)
        inner = np.float32(inner)
        x = ins[0]
        if inner != 1:
            x = self.node("Mul", [x, self.constant(layer.name, inner)], [f"{layer.name}/scaled"],
                          f"{layer.name}/scale")
        if outer == 1:
            self.node("Exp", [x], outs, layer.name)
            return
        e = self.node("Exp", [x], [f"{layer.name}/exp"], f"{layer.name}/exp")
        self.node("Mul", [e, self.constant(layer.name, np.float32(outer))], outs, layer.name)

    def _layer_Log(self, layer, ins, outs):
        p = layer.type_params
        base_scale = log_factor(p)
        x = ins[0]
        if not (p.scale == 1 and p.shift == 0):
            x = self.node("Mul", [x, self.constant(layer.name, np.float32(p.scale))],
                          [f"{layer.name}/scaled"], f"{layer.name}/scale")
            x = self.node("Add", [x, self.constant(layer.name, np.float32(p.shift))],
                          [f"{layer.name}/shifted"], f"{layer.name}/shift")
        if base_scale == 1:
            self.node("Log", [x], outs, layer.name)
            return
        logged = self.node("Log", [x], [f"{layer.name}/log"], f"{layer.name}/log")
        self.node("Mul", [logged, self.constant(layer.name, np.float32(base_scale))], outs, layer.name)

    def _layer_Threshold(self, layer, ins, outs):
        above = self.node("Greater", [ins[0], self.constant(layer.name, np.float32(
            layer.type_params.threshold))], [f"{layer.name}/above"], f"{layer.name}/greater")
        self.node("Cast", [above], outs, layer.name, to=_ELEMENT_TYPE[self.dtype])

    def _layer_Clip(self, layer, ins, outs):
        p = layer.type_params
        self.node("Clip", ins + [self.constant(layer.name, np.float32(p.min), role="min"),
                                 self.constant(layer.name, np.float32(p.max), role="max")], outs, layer.name)

    def _layer_Swish(self, layer, ins, outs):
        beta = np.float32(layer.type_params.beta)
        x = ins[0]
        scaled = x if beta == 1 else self.node("Mul", [x, self.constant(layer.name, beta)],
                                               [f"{layer.name}/scaled"], f"{layer.name}/scale")
        gate = self.node("Sigmoid", [scaled], [f"{layer.name}/gate"], f"{layer.name}/sigmoid")
        self.node("Mul", [x, gate], outs, layer.name)

    def _layer_LRN(self, layer, ins, outs):
        p = layer.type_params
        if p.norm_region == "ACROSS_CHANNELS":
            self.node("LRN", ins, outs, layer.name, size=p.local_size, alpha=float(np.float32(p.alpha)),
                      beta=float(np.float32(p.beta)), bias=float(np.float32(p.k)))
            return
        half = (p.local_size - 1) // 2
        x = ins[0]
        squares = self.node("Mul", [x, x], [f"{layer.name}/squares"], f"{layer.name}/square")
        mean = self.node("AveragePool", [squares], [f"{layer.name}/mean"], f"{layer.name}/pool",
                         kernel_shape=[p.local_size] * 2, strides=[1, 1], pads=[half] * 4,
                         count_include_pad=1)
        scaled = self.node("Mul", [mean, self.constant(layer.name, np.float32(p.alpha))],
                           [f"{layer.name}/scaled"], f"{layer.name}/scale")
        shifted = self.node("Add", [scaled, self.constant(layer.name, np.float32(1))],
                            [f"{layer.name}/shifted"], f"{layer.name}/shift")
        factor = self.node("Pow", [shifted, self.constant(layer.name, -np.float32(p.beta))],
                           [f"{layer.name}/factor"], f"{layer.name}/pow")
        self.node("Mul", [x, factor], outs, layer.name)

    def _layer_Softmax(self, layer, ins, outs):
        self.node("Softmax", ins, outs, layer.name, axis=layer.type_params.axis)

    def _layer_Concat(self, layer, ins, outs):
        p = layer.type_params
        axis = p.concat_dim if p.has("concat_dim") else p.axis
        self.node("Concat", ins, outs, layer.name, axis=axis)

    def _layer_Slice(self, layer, ins, outs):
        p = layer.type_params
        shape = self.shape(layer.bottoms[0])
        axis = (p.slice_dim if p.has("slice_dim") else p.axis) % len(shape)
        sizes = [self.shape(top)[axis] for top in layer.tops]
        self.node("Split", ins + [self.constant(layer.name, sizes, np.int64, "split")], outs, layer.name,
                  axis=axis)

    def _layer_Split(self, layer, ins, outs):
        for i, out in enumerate(outs):
            self.node("Identity", ins, [out], layer.name if i == 0 else f"{layer.name}/{i}")

    def _layer_Silence(self, layer, ins, outs):
        pass

    def _reshape_layer(self, layer, ins, outs):
        target = self._reshape_target(layer.bottoms[0], self.shape(layer.tops[0]))
        self.node("Reshape", [ins[0], self.constant(layer.name, target, np.int64, "shape")], outs,
                  layer.name)

    _layer_Flatten = _reshape_layer
    _layer_Reshape = _reshape_layer

    def _layer_Crop(self, layer, ins, outs):
        p = layer.type_params
        shape, reference = self.shape(layer.bottoms[0]), self.shape(layer.bottoms[1])
        axis = p.axis % len(shape)
        offsets = list(p.offset)
        axes = list(range(axis, len(shape)))
        starts = [0 if not offsets else (offsets[0] if len(offsets) == 1 else offsets[i - axis])
                  for i in axes]
        ends = [s + reference[i] for s, i in zip(starts, axes)]
        self.node("Slice", [ins[0], self.constant(layer.name, starts, np.int64, "starts"),
                            self.constant(layer.name, ends, np.int64, "ends"),
                            self.constant(layer.name, axes, np.int64, "axes")], outs, layer.name)

    def _layer_Tile(self, layer, ins, outs):
        shape = self.shape(layer.bottoms[0])
        repeats = [1] * len(shape)
        repeats[layer.type_params.axis % len(shape)] = layer.type_params.tiles
        self.node("Tile", ins + [self.constant(layer.name, repeats, np.int64, "repeats")], outs, layer.name)

    def _layer_Eltwise(self, layer, ins, outs):
        p = layer.type_params
        if p.operation == "SUM":
            coefficients = list(p.coeff) or [1.0] * len(ins)
            terms = []
            for i, (x, c) in enumerate(zip(ins, coefficients)):
                if c == 1:
                    terms.append(x)
                else:
                    terms.append(self.node("Mul", [x, self.constant(layer.name, np.float32(c))],
                                           [f"{layer.name}/term{i}"], f"{layer.name}/scale{i}"))
            self.node("Sum", terms, outs, layer.name)
        elif p.operation == "PROD":
            current = ins[0]
            for i, x in enumerate(ins[1:], start=1):
                last = i == len(ins) - 1
                current = self.node("Mul", [current, x], outs if last else [f"{layer.name}/p{i}"],
                                    layer.name if last else f"{layer.name}/mul{i}")
        else:
            self.node("Max", ins, outs, layer.name)

    def _layer_ArgMax(self, layer, ins, outs):
        p = layer.type_params
        shape = self.shape(layer.bottoms[0])
        element = _ELEMENT_TYPE[self.dtype]
        if p.has("axis"):
            axis = p.axis % len(shape)
            if p.top_k == 1 and not p.out_max_val:
                index = self.node("ArgMax", ins, [f"{layer.name}/index"], f"{layer.name}/argmax",
                                  axis=axis, keepdims=1, select_last_index=1)
                self.node("Cast", [index], outs, layer.name, to=element)
                return
            k = self.constant(layer.name, [p.top_k], np.int64, "k")
            values, indices = self.node("TopK", ins + [k], [f"{layer.name}/values", f"{layer.name}/indices"],
                                        f"{layer.name}/topk", axis=axis)
            if p.out_max_val:
                self.node("Identity", [values], outs, layer.name)
            else:
                self.node("Cast", [indices], outs, layer.name, to=element)
            return
        flat = self.node("Reshape", [ins[0], self.constant(layer.name, [0, -1], np.int64, "shape")],
                         [f"{layer.name}/flat"], f"{layer.name}/flatten")
        k = self.constant(layer.name, [p.top_k], np.int64, "k")
        values, indices = self.node("TopK", [flat, k], [f"{layer.name}/values", f"{layer.name}/indices"],
                                    f"{layer.name}/topk", axis=1)
        cast = self.node("Cast", [indices], [f"{layer.name}/index"], f"{layer.name}/cast", to=element)
        out_shape = self.shape(layer.tops[0])
        if p.out_max_val:
            stacked = self.node("Concat", [cast, values], [f"{layer.name}/pairs"], f"{layer.name}/concat",
                                axis=1)
            source = stacked
        else:
            source = cast
        target = self._reshape_target(layer.bottoms[0], out_shape)
        self.node("Reshape", [source, self.constant(layer.name, target, np.int64, "out_shape")],
                  outs, layer.name)

    def _layer_Reduction(self, layer, ins, outs):
        p = layer.type_params
        shape = self.shape(layer.bottoms[0])
        axis = p.axis % len(shape) if shape else 0
        op = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceMean"}[
            p.operation]
        lead = list(shape[:axis])
        tail = int(np.prod(shape[axis:]))
        flat_shape = [-1, tail] if (self.dynamic_batch and axis > 0) else [int(np.prod(lead)), -1]
        flat = self.node("Reshape", [ins[0], self.constant(layer.name, flat_shape, np.int64, "shape")],
                         [f"{layer.name}/flat"], f"{layer.name}/flatten")
        reduced = self._reduce(op, flat, [1], 0, f"{layer.name}/reduced", f"{layer.name}/reduce")
        out_shape = ([-1] + lead[1:]) if (self.dynamic_batch and lead) else lead
        shaped = self.node("Reshape", [reduced, self.constant(layer.name, out_shape, np.int64, "out_shape")],
                           [f"{layer.name}/shaped" if p.coeff != 1 else outs[0]],
                           f"{layer.name}/reshape" if p.coeff != 1 else layer.name)
        if p.coeff != 1:
            self.node("Mul", [shaped, self.constant(layer.name, np.float32(p.coeff))], outs, layer.name)

    def _layer_Embed(self, layer, ins, outs):
        p = layer.type_params
        index = self.node("Cast", ins, [f"{layer.name}/index"], f"{layer.name}/cast", to=TensorProto.INT64)
        weight = self.weight(layer, 0, layer.blobs[0].data.numpy().reshape(p.input_dim, -1))
        if not p.bias_term:
            self.node("Gather", [weight, index], outs, layer.name, axis=0)
            return
        rows = self.node("Gather", [weight, index], [f"{layer.name}/rows"], f"{layer.name}/gather", axis=0)
        self.node("Add", [rows, self.weight(layer, 1, layer.blobs[1].data.numpy().reshape(-1))], outs,
                  layer.name)

    def _layer_MVN(self, layer, ins, outs):
        p = layer.type_params
        ndim = len(self.shape(layer.bottoms[0]))
        axes = list(range(1 if p.across_channels else 2, ndim))
        x = ins[0]
        mean = self._reduce("ReduceMean", x, axes, 1, f"{layer.name}/mean", f"{layer.name}/mean")
        centered_out = outs[0] if not p.normalize_variance else f"{layer.name}/centered"
        centered = self.node("Sub", [x, mean], [centered_out],
                             layer.name if not p.normalize_variance else f"{layer.name}/center")
        if not p.normalize_variance:
            return
        squares = self.node("Mul", [x, x], [f"{layer.name}/squares"], f"{layer.name}/square")
        mean_squares = self._reduce("ReduceMean", squares, axes, 1, f"{layer.name}/mean_squares",
                                    f"{layer.name}/mean_square")
        mean2 = self.node("Mul", [mean, mean], [f"{layer.name}/mean2"], f"{layer.name}/mean2")
        variance = self.node("Sub", [mean_squares, mean2], [f"{layer.name}/var"], f"{layer.name}/var")
        deviation = self.node("Sqrt", [variance], [f"{layer.name}/std"], f"{layer.name}/sqrt")
        denominator = self.node("Add", [deviation, self.constant(layer.name, np.float32(p.eps))],
                                [f"{layer.name}/denominator"], f"{layer.name}/eps")
        self.node("Div", [centered, denominator], outs, layer.name)


def value_info(name: str, shape, element_type, dynamic_batch: bool):
    dims = list(shape)
    if dynamic_batch and dims:
        dims[0] = "batch"
    return helper.make_tensor_value_info(name, element_type, dims)


def build_graph(model: Model, *, opset: int = DEFAULT_OPSET, input_shapes=None,
                dynamic_batch: bool = False, strict: bool = False):
    """(graph pieces) for `model`: nodes, initializers (name, array-like), inputs, outputs."""
    builder = GraphBuilder(model, opset, input_shapes or {}, dynamic_batch, strict).build()
    element = _ELEMENT_TYPE[builder.dtype]
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
