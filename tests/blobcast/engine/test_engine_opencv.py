"""The engine against OpenCV's Caffe importer (cv2.dnn), an independent engine.

Two OpenCV deviations from Caffe shape these nets: its importer ignores LRN's
`k` (it always uses 1), and it reads pad_h only when pad_w is also given. The
real-Caffe tests cover those cases.
"""

import numpy as np
import pytest

import blobcast
from blobcast.check import compare_arrays
from blobcast.engine import Net

from ...netgen import with_random_weights

cv2 = pytest.importorskip("cv2")

HEADER = 'name: "t" layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }\n'

NETS = {
    "convolutions": ("dim: 2 dim: 6 dim: 15 dim: 15", """
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 group: 2 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 8 kernel_size: 3 dilation: 2 pad: 2 bias_term: false } }
layer { name: "c3" type: "Convolution" bottom: "c2" top: "c3"
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 } }
layer { name: "dw" type: "Convolution" bottom: "c3" top: "dw"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 4 } }
layer { name: "up" type: "Deconvolution" bottom: "dw" top: "up"
  convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 } }
"""),
    "pooling": ("dim: 2 dim: 3 dim: 17 dim: 17", """
layer { name: "p1" type: "Pooling" bottom: "data" top: "p1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "p2" type: "Pooling" bottom: "p1" top: "p2" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "p3" type: "Pooling" bottom: "data" top: "p3" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "p4" type: "Pooling" bottom: "p3" top: "p4" pooling_param { pool: AVE global_pooling: true } }
"""),
    "residual_block": ("dim: 1 dim: 8 dim: 12 dim: 12", """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "data" top: "sum" eltwise_param { coeff: 0.5 coeff: -1 } }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "data" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "sum" top: "max" eltwise_param { operation: MAX } }
layer { name: "lrn" type: "LRN" bottom: "max" top: "lrn" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 } }
layer { name: "pool" type: "Pooling" bottom: "lrn" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""),
    "activations_and_shapes": ("dim: 2 dim: 6 dim: 5 dim: 5", """
layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" }
layer { name: "elu" type: "ELU" bottom: "prelu" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "tanh" type: "TanH" bottom: "elu" top: "tanh" }
layer { name: "sig" type: "Sigmoid" bottom: "data" top: "sig" }
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "pow" type: "Power" bottom: "abs" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "bnll" type: "BNLL" bottom: "data" top: "bnll" }
layer { name: "leaky" type: "ReLU" bottom: "data" top: "leaky" relu_param { negative_slope: 0.1 } }
layer { name: "cat" type: "Concat" bottom: "tanh" bottom: "sig" bottom: "pow" bottom: "bnll" bottom: "leaky" top: "cat" }
layer { name: "slice" type: "Slice" bottom: "cat" top: "s1" top: "s2" slice_param { slice_point: 10 } }
layer { name: "mvn" type: "MVN" bottom: "s1" top: "mvn" }
layer { name: "flat" type: "Flatten" bottom: "s2" top: "flat" }
layer { name: "reshape" type: "Reshape" bottom: "mvn" top: "reshape" reshape_param { shape { dim: 0 dim: -1 dim: 25 } } }
layer { name: "soft" type: "Softmax" bottom: "reshape" top: "soft" softmax_param { axis: 2 } }
"""),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_engine_agrees_with_opencv(name, tmp_path):
    shape_text, body = NETS[name]
    text = HEADER % shape_text + body
    dims = [int(d) for d in shape_text.replace("dim:", "").split()]
    model = with_random_weights(text, {"data": tuple(dims)}, seed=len(name))
    weights, definition = tmp_path / "net.caffemodel", tmp_path / "net.prototxt"
    blobcast.save(model, weights)
    definition.write_text(text)
    x = np.random.RandomState(1).standard_normal(dims).astype(np.float32)
    ours = Net(model).forward({"data": x})
    reference = cv2.dnn.readNetFromCaffe(str(definition), str(weights))
    reference.setInput(x)
    names = list(ours)
    theirs = reference.forward(names)
    for blob, value, other in zip(names, [ours[n] for n in names], theirs):
        result = compare_arrays(blob, value, np.asarray(other).reshape(value.shape), 1e-5, 1e-3)
        assert result.passed, result


def test_a_half_given_stride_is_refused_like_caffe(tmp_path):
    text = HEADER % "dim: 1 dim: 2 dim: 5 dim: 5" + """
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 2 kernel_size: 3 stride_w: 2 } }"""
    from blobcast.converters.prototxt import net_from_text

    net = net_from_text(text, "<test>")
    net["c"].blobs = [blobcast.Blob(np.zeros((2, 2, 3, 3), np.float32)),
                      blobcast.Blob(np.zeros(2, np.float32))]
    with pytest.raises(blobcast.BlobcastError, match=r"every stride dimension must be positive, got \[0, 2\]"):
        Net(net).forward({"data": np.zeros((1, 2, 5, 5), np.float32)})
