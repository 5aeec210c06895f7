"""Pooling and SPP: Caffe's rounding, padding rule and methods."""

import numpy as np
import pytest

import blobcast

from ...netgen import HEADER, net


def test_stochastic_pooling_at_test_time_is_the_probability_weighted_mean():
    x = np.abs(np.random.RandomState(1).standard_normal((1, 1, 4, 4))).astype(np.float32)
    pool = net(HEADER % "dim: 1 dim: 1 dim: 4 dim: 4" + 'layer { name: "p" type: "Pooling" bottom: "data" '
               'top: "p" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }')
    y = pool.forward({"data": x})["p"]
    windows = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    expected = (windows ** 2).sum(-1) / windows.sum(-1)
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)


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
