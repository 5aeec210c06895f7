"""Layers that move, split, join, reshape or combine blobs, with the forks'
ShuffleChannel, Permute and Axpy."""

import numpy as np
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net

from ...netgen import HEADER, net
from .test_fork_layers import _with_weights

runner = CliRunner()


def test_silence_consumes_and_produces_nothing():
    silent = net(HEADER % "dim: 1 dim: 2" + 'layer { name: "s" type: "Silence" bottom: "data" }\n'
                 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert set(silent.forward({"data": np.ones((1, 2), np.float32)})) == {"r"}


def test_shuffle_channel_interleaves_as_shufflenet():
    text = ('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 6 dim: 1 dim: 1 } } }\n'
            'layer { name: "s" type: "ShuffleChannel" bottom: "x" top: "y" shuffle_channel_param { group: 2 } }')
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    y = Net(net_from_text(text, "<net>")).forward({"x": x})["y"]
    assert y.ravel().tolist() == [0, 3, 1, 4, 2, 5]  # out[j*G + i] = in[i*(C/G) + j]


def test_axpy_and_the_yolo_upsample():
    text = ('layer { name: "data" type: "Input" top: "a" top: "x" top: "y" input_param {'
            ' shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n'
            'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "f" }\n'
            'layer { name: "up" type: "Upsample" bottom: "f" top: "up" upsample_param { scale: 2 } }')
    rng = np.random.RandomState(2)
    a, x, y = (rng.normal(size=s).astype(np.float32) for s in ((2, 3), (2, 3, 4, 5), (2, 3, 4, 5)))
    out = Net(net_from_text(text, "<net>")).forward({"a": a, "x": x, "y": y}, keep_all=True)
    np.testing.assert_allclose(out["f"], a[:, :, None, None] * x + y, rtol=1e-6)  # SENet: a*X + Y
    assert out["up"].shape == (2, 3, 8, 10)
    np.testing.assert_array_equal(out["up"][:, :, ::2, ::2], out["f"])
    np.testing.assert_array_equal(out["up"][:, :, 1::2, 1::2], out["f"])


def test_an_exported_permute_imports_back_as_a_permute(tmp_path):
    text = ('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 4 } } }\n'
            'layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: 0 order: 3 } }')
    prototxt, weights = _with_weights(text, tmp_path, "permute")
    assert runner.invoke(app, ["convert", str(weights), str(tmp_path / "p.onnx")]).exit_code == 0
    back = runner.invoke(app, ["convert", str(tmp_path / "p.onnx"), str(tmp_path / "back.caffemodel"),
                               "--json"])
    assert back.exit_code == 0, back.output
    layer = blobcast.load(tmp_path / "back.caffemodel")["p"]
    assert layer.type == "Permute" and list(layer.type_params.order) == [0, 3, 1, 2]
