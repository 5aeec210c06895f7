"""Convolution, Deconvolution and the forks' depthwise convolutions."""

import numpy as np
import pytest

from ...netgen import HEADER, net


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


@pytest.mark.parametrize("kind", ["ConvolutionDepthwise", "DepthwiseConvolution"])
def test_the_forks_depthwise_convolutions_are_convolutions_with_a_group_per_channel(kind):
    rng = np.random.RandomState(4)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    weights = {"c": [rng.standard_normal((3, 1, 3, 3)).astype(np.float32),
                     rng.standard_normal(3).astype(np.float32)]}
    layer = ('layer {{ name: "c" type: "{}" bottom: "data" top: "c" '
             'convolution_param {{ num_output: 3 group: 3 kernel_size: 3 stride: 1 pad: 1 }} }}')
    header = HEADER % "dim: 2 dim: 3 dim: 7 dim: 6"
    grouped = net(header + layer.format("Convolution"), weights).forward({"data": x})["c"]
    ours = net(header + layer.format(kind), weights).forward({"data": x})["c"]
    np.testing.assert_allclose(ours, grouped, rtol=1e-6, atol=1e-6)

