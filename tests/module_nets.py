"""GoogLeNet- and ResNet-50-style nets for the module tests, written flat as
BVLC's prototxts name their layers, and GoogLeNet written with a module.
Channel counts are BVLC's divided by `shrink`, so the nets run quickly."""

from __future__ import annotations

INCEPTIONS = [  # name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj (BVLC GoogLeNet)
    ("inception_3a", 64, 96, 128, 16, 32, 32), ("inception_3b", 128, 128, 192, 32, 96, 64),
    ("inception_4a", 192, 96, 208, 16, 48, 64), ("inception_4b", 160, 112, 224, 24, 64, 64),
    ("inception_4c", 128, 128, 256, 24, 64, 64), ("inception_4d", 112, 144, 288, 32, 64, 64),
    ("inception_4e", 256, 160, 320, 32, 128, 128), ("inception_5a", 256, 160, 320, 32, 128, 128),
    ("inception_5b", 384, 192, 384, 48, 128, 128),
]
POOL_AFTER = {"inception_3b": "pool3/3x3_s2", "inception_4e": "pool4/3x3_s2"}


def _conv(name, bottom, top, outputs, kernel, pad=0, stride=1):
    extra = (f" pad: {pad}" if pad else "") + (f" stride: {stride}" if stride != 1 else "")
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ num_output: {outputs}{extra} kernel_size: {kernel} }} }}')


def _relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}'


def _pool(name, bottom, top, kind, kernel, stride, pad=0):
    extra = f" pad: {pad}" if pad else ""
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{top}" '
            f'pooling_param {{ pool: {kind} kernel_size: {kernel} stride: {stride}{extra} }} }}')


def _stem(shrink: int, size: int) -> list[str]:
    c = lambda n: max(1, n // shrink)  # noqa: E731
    return ['name: "GoogleNet"',
            f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 '
            f'dim: {size} dim: {size} }} }} }}',
            _conv("conv1/7x7_s2", "data", "conv1/7x7_s2", c(64), 7, 3, 2), _relu("conv1/relu_7x7", "conv1/7x7_s2"),
            _pool("pool1/3x3_s2", "conv1/7x7_s2", "pool1/3x3_s2", "MAX", 3, 2),
            _conv("conv2/3x3_reduce", "pool1/3x3_s2", "conv2/3x3_reduce", c(64), 1),
            _relu("conv2/relu_3x3_reduce", "conv2/3x3_reduce"),
            _conv("conv2/3x3", "conv2/3x3_reduce", "conv2/3x3", c(192), 3, 1),
            _relu("conv2/relu_3x3", "conv2/3x3"),
            _pool("pool2/3x3_s2", "conv2/3x3", "pool2/3x3_s2", "MAX", 3, 2)]


def _inception_layers(prefix: str, bottom: str, sizes, c) -> list[str]:
    n1, n3r, n3, n5r, n5, proj = (c(n) for n in sizes)
    p = lambda local: f"{prefix}/{local}"  # noqa: E731
    return [_conv(p("1x1"), bottom, p("1x1"), n1, 1), _relu(p("relu_1x1"), p("1x1")),
            _conv(p("3x3_reduce"), bottom, p("3x3_reduce"), n3r, 1), _relu(p("relu_3x3_reduce"), p("3x3_reduce")),
            _conv(p("3x3"), p("3x3_reduce"), p("3x3"), n3, 3, 1), _relu(p("relu_3x3"), p("3x3")),
            _conv(p("5x5_reduce"), bottom, p("5x5_reduce"), n5r, 1), _relu(p("relu_5x5_reduce"), p("5x5_reduce")),
            _conv(p("5x5"), p("5x5_reduce"), p("5x5"), n5, 5, 2), _relu(p("relu_5x5"), p("5x5")),
            _pool(p("pool"), bottom, p("pool"), "MAX", 3, 1, 1),
            _conv(p("pool_proj"), p("pool"), p("pool_proj"), proj, 1), _relu(p("relu_pool_proj"), p("pool_proj")),
            f'layer {{ name: "{p("output")}" type: "Concat" bottom: "{p("1x1")}" bottom: "{p("3x3")}" '
            f'bottom: "{p("5x5")}" bottom: "{p("pool_proj")}" top: "{p("output")}" }}']


def _head(bottom: str, shrink: int) -> list[str]:
    return [f'layer {{ name: "pool5/7x7_s1" type: "Pooling" bottom: "{bottom}" top: "pool5/7x7_s1" '
            'pooling_param { pool: AVE global_pooling: true } }',
            f'layer {{ name: "loss3/classifier" type: "InnerProduct" bottom: "pool5/7x7_s1" '
            f'top: "loss3/classifier" inner_product_param {{ num_output: {max(1, 1000 // shrink)} }} }}',
            'layer { name: "prob" type: "Softmax" bottom: "loss3/classifier" top: "prob" }']


def googlenet_flat(shrink: int = 8, size: int = 64) -> str:
    c = lambda n: max(1, n // shrink)  # noqa: E731
    lines, bottom = _stem(shrink, size), "pool2/3x3_s2"
    for name, *sizes in INCEPTIONS:
        lines += _inception_layers(name, bottom, sizes, c)
        bottom = f"{name}/output"
        if name in POOL_AFTER:
            lines.append(_pool(POOL_AFTER[name], bottom, POOL_AFTER[name], "MAX", 3, 2))
            bottom = POOL_AFTER[name]
    return "\n".join(lines + _head(bottom, shrink)) + "\n"


INCEPTION_MODULE = """module {
  name: "Inception"
  input: "x"
  output: "output"
  param { name: "n1x1" }  param { name: "n3x3_reduce" }  param { name: "n3x3" }
  param { name: "n5x5_reduce" }  param { name: "n5x5" }  param { name: "pool_proj" }
  layer { name: "1x1" type: "Convolution" bottom: "x" top: "1x1" convolution_param { num_output: ${n1x1} kernel_size: 1 } }
  layer { name: "relu_1x1" type: "ReLU" bottom: "1x1" top: "1x1" }
  layer { name: "3x3_reduce" type: "Convolution" bottom: "x" top: "3x3_reduce" convolution_param { num_output: ${n3x3_reduce} kernel_size: 1 } }
  layer { name: "relu_3x3_reduce" type: "ReLU" bottom: "3x3_reduce" top: "3x3_reduce" }
  layer { name: "3x3" type: "Convolution" bottom: "3x3_reduce" top: "3x3" convolution_param { num_output: ${n3x3} pad: 1 kernel_size: 3 } }
  layer { name: "relu_3x3" type: "ReLU" bottom: "3x3" top: "3x3" }
  layer { name: "5x5_reduce" type: "Convolution" bottom: "x" top: "5x5_reduce" convolution_param { num_output: ${n5x5_reduce} kernel_size: 1 } }
  layer { name: "relu_5x5_reduce" type: "ReLU" bottom: "5x5_reduce" top: "5x5_reduce" }
  layer { name: "5x5" type: "Convolution" bottom: "5x5_reduce" top: "5x5" convolution_param { num_output: ${n5x5} pad: 2 kernel_size: 5 } }
  layer { name: "relu_5x5" type: "ReLU" bottom: "5x5" top: "5x5" }
  layer { name: "pool" type: "Pooling" bottom: "x" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
  layer { name: "pool_proj" type: "Convolution" bottom: "pool" top: "pool_proj" convolution_param { num_output: ${pool_proj} kernel_size: 1 } }
  layer { name: "relu_pool_proj" type: "ReLU" bottom: "pool_proj" top: "pool_proj" }
  layer { name: "output" type: "Concat" bottom: "1x1" bottom: "3x3" bottom: "5x5" bottom: "pool_proj" top: "output" }
}
"""


def googlenet_modular(shrink: int = 8, size: int = 64) -> str:
    c = lambda n: max(1, n // shrink)  # noqa: E731
    keys = ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj")
    lines, bottom = ['module_separator: "/"', INCEPTION_MODULE] + _stem(shrink, size), "pool2/3x3_s2"
    for name, *sizes in INCEPTIONS:
        params = " ".join(f'module_param {{ key: "{k}" value: "{c(v)}" }}' for k, v in zip(keys, sizes))
        lines.append(f'layer {{ name: "{name}" module: "Inception" bottom: "{bottom}" '
                     f'top: "{name}/output" {params} }}')
        bottom = f"{name}/output"
        if name in POOL_AFTER:
            lines.append(_pool(POOL_AFTER[name], bottom, POOL_AFTER[name], "MAX", 3, 2))
            bottom = POOL_AFTER[name]
    return "\n".join(lines + _head(bottom, shrink)) + "\n"


def _bn_scale(suffix: str, blob: str) -> list[str]:
    return [f'layer {{ name: "bn{suffix}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" '
            'batch_norm_param { use_global_stats: true } }',
            f'layer {{ name: "scale{suffix}" type: "Scale" bottom: "{blob}" top: "{blob}" '
            'scale_param { bias_term: true } }']


def _resnet_conv(name, bottom, outputs, kernel, stride=1, pad=0):
    extra = f" kernel_size: {kernel} pad: {pad} stride: {stride}"  # BVLC's file writes all three
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {outputs}{extra} bias_term: false }} }}')


def resnet50_flat(shrink: int = 8, size: int = 64) -> str:
    """BVLC ResNet-50's deploy layout and names (KaimingHe/deep-residual-networks)."""
    c = lambda n: max(1, n // shrink)  # noqa: E731
    lines = ['name: "ResNet-50"',
             f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 '
             f'dim: {size} dim: {size} }} }} }}',
             _resnet_conv("conv1", "data", c(64), 7, 2, 3), *_bn_scale("_conv1", "conv1"),
             _relu("conv1_relu", "conv1"), _pool("pool1", "conv1", "pool1", "MAX", 3, 2)]
    bottom = "pool1"
    for stage, blocks, width in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        for index in range(blocks):
            block = f"{stage}{'abcdef'[index]}"
            stride = 2 if index == 0 and stage > 2 else 1
            if index == 0:
                lines += [_resnet_conv(f"res{block}_branch1", bottom, c(width * 4), 1, stride),
                          *_bn_scale(f"{block}_branch1", f"res{block}_branch1")]
                shortcut = f"res{block}_branch1"
            else:
                shortcut = bottom
            a, b, cc = (f"res{block}_branch2{x}" for x in "abc")
            lines += [_resnet_conv(a, bottom, c(width), 1, stride), *_bn_scale(f"{block}_branch2a", a),
                      _relu(f"{a}_relu", a),
                      _resnet_conv(b, a, c(width), 3, 1, 1), *_bn_scale(f"{block}_branch2b", b),
                      _relu(f"{b}_relu", b),
                      _resnet_conv(cc, b, c(width * 4), 1), *_bn_scale(f"{block}_branch2c", cc),
                      f'layer {{ name: "res{block}" type: "Eltwise" bottom: "{shortcut}" bottom: "{cc}" '
                      f'top: "res{block}" }}',
                      _relu(f"res{block}_relu", f"res{block}")]
            bottom = f"res{block}"
    lines += [f'layer {{ name: "pool5" type: "Pooling" bottom: "{bottom}" top: "pool5" '
              'pooling_param { pool: AVE global_pooling: true } }',
              f'layer {{ name: "fc1000" type: "InnerProduct" bottom: "pool5" top: "fc1000" '
              f'inner_product_param {{ num_output: {c(1000)} }} }}',
              'layer { name: "prob" type: "Softmax" bottom: "fc1000" top: "prob" }']
    return "\n".join(lines) + "\n"
