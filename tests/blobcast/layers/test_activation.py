"""Element-wise layers, with the forks' ReLU6; the BVLC ones run in the
recorded zoo net (tests/blobcast/engine/test_engine_caffe.py)."""

import numpy as np

from ...netgen import HEADER, net


def test_relu6_clips_below_zero_and_above_six():
    x = np.linspace(-3, 9, 24, dtype=np.float32).reshape(1, 2, 3, 4)
    relu6 = net(HEADER % "dim: 1 dim: 2 dim: 3 dim: 4"
                + 'layer { name: "r" type: "ReLU6" bottom: "data" top: "r" }')
    np.testing.assert_array_equal(relu6.forward({"data": x})["r"], np.clip(x, 0, 6))
