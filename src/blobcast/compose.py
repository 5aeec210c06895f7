"""Nets built from Python, block by block: a better NetSpec that keeps the
module structure.

A module is a function of the builder, its input blobs (positional) and its
parameters (keyword-only), decorated with `@module`; each call is an
instance, whose layer and blob names are qualified by the instance name.
The result is a canonical Model with its module tree (modules.py), which
every writer takes: flat .prototxt/.caffemodel, .caffemodel.h5 and ONNX
(functions) keep or drop the tree as their formats allow.

    @module("Inception")
    def inception(net, x, *, n1x1, n3x3):
        a = net.relu(net.conv(x, n1x1, 1, name="1x1"), name="relu_1x1")
        b = net.relu(net.conv(x, n3x3, 3, pad=1, name="3x3"), name="relu_3x3")
        return net.concat(a, b, name="output")

    net = NetBuilder("tiny", separator="/")
    x = net.input("data", [1, 3, 32, 32])
    x = inception(net, x, n1x1=8, n3x3=16, name="inception_1")
    model = net.model()
"""

from __future__ import annotations

import functools
import inspect

from .model import Layer, Model
from .modules import ModuleInstance, share_parameters


class NetBuilder:
    def __init__(self, name: str = "", separator: str = "."):
        self.name, self.separator = name, separator
        self.layers: list[Layer] = []
        self.modules: dict[str, ModuleInstance] = {}
        self._scopes: list[str] = []   # qualified names of the instances being built

    # -- names ----------------------------------------------------------------------
    def qualified(self, local: str) -> str:
        return self.separator.join([self._scopes[-1], local]) if self._scopes else local

    def layer(self, kind: str, bottoms, name: str, top: str | None = None, in_place: bool = False,
              tops=None, **settings) -> str:
        """Add a layer; returns its (first) top. `in_place`: the top is the bottom."""
        qualified = self.qualified(name)
        bottoms = list(bottoms)
        if tops is None:
            tops = [bottoms[0]] if in_place else [self.qualified(top) if top else qualified]
        layer = Layer(qualified, kind, bottoms=bottoms, tops=tops, **settings)
        layer.module_path = tuple(self._scopes)
        self.layers.append(layer)
        return tops[0]

    # -- layers -------------------------------------------------------------------------
    def input(self, name: str, shape) -> str:
        return self.layer("Input", [], name, input_param={"shape": [{"dim": list(shape)}]})

    def conv(self, x: str, num_output: int, kernel: int, *, name: str, stride: int = 1, pad: int = 0,
             group: int = 1, bias: bool = True) -> str:
        settings = {"num_output": num_output}
        if pad:
            settings["pad"] = [pad]
        settings["kernel_size"] = [kernel]
        if stride != 1:
            settings["stride"] = [stride]
        if group != 1:
            settings["group"] = group
        if not bias:
            settings["bias_term"] = False
        return self.layer("Convolution", [x], name, convolution_param=settings)

    def relu(self, x: str, *, name: str) -> str:
        return self.layer("ReLU", [x], name, in_place=True)

    def batch_norm(self, x: str, *, name: str, scale_name: str) -> str:
        self.layer("BatchNorm", [x], name, in_place=True, batch_norm_param={"use_global_stats": True})
        return self.layer("Scale", [x], scale_name, in_place=True, scale_param={"bias_term": True})

    def pool(self, x: str, kind: str = "MAX", kernel: int = 0, stride: int = 1, pad: int = 0, *,
             name: str, global_pooling: bool = False) -> str:
        settings: dict = {"pool": kind}
        if global_pooling:
            settings["global_pooling"] = True
        else:
            settings.update(kernel_size=kernel, stride=stride)
            if pad:
                settings["pad"] = pad
        return self.layer("Pooling", [x], name, pooling_param=settings)

    def concat(self, *xs: str, name: str) -> str:
        return self.layer("Concat", xs, name)

    def add(self, *xs: str, name: str) -> str:
        return self.layer("Eltwise", xs, name)

    def fc(self, x: str, num_output: int, *, name: str) -> str:
        return self.layer("InnerProduct", [x], name, inner_product_param={"num_output": num_output})

    def softmax(self, x: str, *, name: str) -> str:
        return self.layer("Softmax", [x], name)

    # -- the result -----------------------------------------------------------------------
    def model(self) -> Model:
        for instance in self.modules.values():
            if instance.share_weights:  # each module layer's blobs: one set for every instance
                prefix = instance.name + self.separator
                for layer in self.layers:
                    if instance.name in layer.module_path and layer.name.startswith(prefix):
                        share_parameters(layer, f"{instance.module}{self.separator}"
                                         f"{layer.name[len(prefix):]}", self.separator)
        model = Model(layers=list(self.layers), source_format="python")
        model.name = self.name
        model.modules = dict(self.modules)
        return model


def module(name: str):
    """Make `f(net, *input_blobs, **params)` a module named `name`: each call
    (with `name=` for the instance) adds its layers under that instance."""
    module_name = name  # the instance's keyword is `name` too

    def wrap(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def instance(net: NetBuilder, *inputs: str, name: str, share_weights: bool = False, **params):
            signature.bind(net, *inputs, **params)  # wrong arguments fail here, as Python says
            qualified = net.qualified(name)
            if qualified in net.modules:
                raise ValueError(f"instance {qualified!r} of module {module_name!r} exists already")
            parent = net._scopes[-1] if net._scopes else None
            record = ModuleInstance(qualified, module_name, {k: str(v) for k, v in params.items()},
                                    list(inputs), [], parent, share_weights)
            net.modules[qualified] = record
            net._scopes.append(qualified)
            try:
                result = function(net, *inputs, **params)
            finally:
                net._scopes.pop()
            record.tops = list(result) if isinstance(result, (tuple, list)) else [result]
            return result

        return instance

    return wrap
