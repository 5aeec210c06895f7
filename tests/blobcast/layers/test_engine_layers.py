"""Engine cases the recorded Caffe passes do not cover, each checked against
an independent statement of Caffe's rule."""

import numpy as np
import pytest

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net

HEADER = 'layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }\n'


def net(text: str, weights: dict | None = None) -> Net:
    model = net_from_text(text, "<test>")
    for name, arrays in (weights or {}).items():
        model[name].blobs = [blobcast.Blob(np.asarray(a, np.float32)) for a in arrays]
    return Net(model)


def test_nd_convolution_over_a_singleton_depth_equals_2d():
    rng = np.random.RandomState(0)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    conv = 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 4 %s } }'
    two_d = net(HEADER % "dim: 2 dim: 3 dim: 9 dim: 9" + conv % "kernel_size: 3 stride: 2 pad: 1",
                {"c": [w, b]}).forward({"data": x})["c"]
    three_d = net(HEADER % "dim: 2 dim: 3 dim: 1 dim: 9 dim: 9"
                  + conv % "kernel_size: 1 kernel_size: 3 kernel_size: 3 stride: 1 stride: 2 stride: 2 "
                           "pad: 0 pad: 1 pad: 1",
                  {"c": [w[:, :, None], b]}).forward({"data": x[:, :, None]})["c"]
    np.testing.assert_allclose(three_d[:, :, 0], two_d, rtol=1e-5, atol=1e-5)


def test_stochastic_pooling_at_test_time_is_the_probability_weighted_mean():
    x = np.abs(np.random.RandomState(1).standard_normal((1, 1, 4, 4))).astype(np.float32)
    pool = net(HEADER % "dim: 1 dim: 1 dim: 4 dim: 4" + 'layer { name: "p" type: "Pooling" bottom: "data" '
               'top: "p" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }')
    y = pool.forward({"data": x})["p"]
    windows = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    expected = (windows ** 2).sum(-1) / windows.sum(-1)
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)


def test_batchnorm_scale_factor_zero_means_zero_statistics():
    x = np.random.RandomState(2).standard_normal((1, 2, 3, 3)).astype(np.float32)
    bn = net(HEADER % "dim: 1 dim: 2 dim: 3 dim: 3" + 'layer { name: "bn" type: "BatchNorm" bottom: "data" '
             'top: "bn" batch_norm_param { eps: 0.01 } }', {"bn": [[5, 6], [7, 8], [0]]})
    np.testing.assert_allclose(bn.forward({"data": x})["bn"], x / np.sqrt(0.01), rtol=1e-6)


def test_batchnorm_without_global_stats_uses_the_batch():
    x = np.random.RandomState(3).standard_normal((4, 2, 3, 3)).astype(np.float32)
    bn = net(HEADER % "dim: 4 dim: 2 dim: 3 dim: 3" + 'layer { name: "bn" type: "BatchNorm" bottom: "data" '
             'top: "bn" batch_norm_param { use_global_stats: false } }', {"bn": [[0, 0], [1, 1], [1]]})
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    variance = x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(bn.forward({"data": x})["bn"], (x - mean) / np.sqrt(variance + 1e-5),
                               rtol=1e-4, atol=1e-5)


def test_silence_consumes_and_produces_nothing():
    silent = net(HEADER % "dim: 1 dim: 2" + 'layer { name: "s" type: "Silence" bottom: "data" }\n'
                 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert set(silent.forward({"data": np.ones((1, 2), np.float32)})) == {"r"}


def test_floor_round_mode_and_pooling_padding_rule():
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    floor = net(HEADER % "dim: 1 dim: 1 dim: 5 dim: 5" + 'layer { name: "p" type: "Pooling" bottom: "data" '
                'top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }')
    assert floor.forward({"data": x})["p"].shape == (1, 1, 2, 2)
    ceil = net(HEADER % "dim: 1 dim: 1 dim: 5 dim: 5" + 'layer { name: "p" type: "Pooling" bottom: "data" '
               'top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }')
    assert ceil.forward({"data": x})["p"].shape == (1, 1, 3, 3)


def test_pooling_refuses_padding_as_large_as_the_kernel():
    bad = net(HEADER % "dim: 1 dim: 1 dim: 5 dim: 5" + 'layer { name: "p" type: "Pooling" bottom: "data" '
              'top: "p" pooling_param { pool: MAX kernel_size: 2 pad: 2 } }')
    with pytest.raises(blobcast.BlobcastError, match="padding must be smaller than the kernel"):
        bad.forward({"data": np.zeros((1, 1, 5, 5), np.float32)})


def test_shape_inference_without_weights_matches_a_real_pass():
    from blobcast.engine import blob_shapes

    from ...conftest import CAFFE

    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    _, shapes = blob_shapes(model)
    real = Net(model).forward({"data": np.zeros((2, 4, 17, 17), np.float32)}, keep_all=True)
    assert shapes == {name: value.shape for name, value in real.items()}
