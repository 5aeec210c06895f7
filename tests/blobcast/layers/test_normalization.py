"""BatchNorm, Scale, Bias, LRN, MVN, and the forks' Normalize and BN (PSPNet's
and SegNet/ENet's, on the official nets of fixtures/real/)."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net
from blobcast.engine.random_fill import fill_random_weights

from ...conftest import ROOT
from ...netgen import HEADER, net

runner = CliRunner()
REAL = ROOT / "fixtures" / "real"


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


def _first_layers(path, count, shape):
    """The real net's first `count` layers behind an input of `shape`."""
    model = blobcast.load(path)
    model.layers = model.layers[:count + 1]  # the Input layer made from the legacy inputs, then these
    model.layers[0].spec.input_param.shape[0].dim = list(shape)
    return model


def test_pspnet_bn_normalises_with_its_frozen_statistics(tmp_path):
    model = _first_layers(REAL / "pspnet" / "pspnet50_ADE20K_473.prototxt", 2, (1, 3, 17, 17))
    bn = model.layers[2]
    assert bn.type == "BN" and bn.spec.bn_param.frozen
    fill_random_weights(model)
    rng = np.random.RandomState(3)
    slope, bias, mean = (rng.normal(0, 1, (1, 64, 1, 1)).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.2, 2, (1, 64, 1, 1)).astype(np.float32)
    bn.blobs = [blobcast.Blob(v) for v in (slope, bias, mean, variance)]
    x = rng.normal(0, 1, (1, 3, 17, 17)).astype(np.float32)
    conv = Net(blobcast.Model(net=model.net, layers=model.layers[:2])).forward({"data": x})
    conv = conv["conv1_1_3x3_s2"].astype(np.float64)
    expected = (conv - mean) / np.sqrt(variance.astype(np.float64) + 1e-5) * slope + bias
    for phase in ("TEST", "TRAIN"):  # frozen: the running statistics in training too
        out = Net(model, phase=phase).forward({"data": x})["conv1_1_3x3_s2"]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    blobcast.save(model, tmp_path / "psp.caffemodel")
    result = runner.invoke(app, ["convert", str(tmp_path / "psp.caffemodel"), str(tmp_path / "psp.onnx"),
                                 "--strict", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    assert "BatchNormalization" in {n.op_type for n in onnx.load(tmp_path / "psp.onnx").graph.node}


def test_pspnet_unfrozen_bn_in_training_uses_the_batch_statistics():
    model = _first_layers(REAL / "pspnet" / "pspnet50_ADE20K_473.prototxt", 2, (2, 3, 9, 9))
    model.layers[2].spec.bn_param.frozen = False
    fill_random_weights(model)
    x = np.random.RandomState(4).normal(0, 1, (2, 3, 9, 9)).astype(np.float32)
    conv = Net(blobcast.Model(net=model.net, layers=model.layers[:2])).forward({"data": x})
    conv = conv["conv1_1_3x3_s2"].astype(np.float64)
    mean = conv.mean(axis=(0, 2, 3), keepdims=True)
    expected = (conv - mean) / np.sqrt(((conv - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True) + 1e-5)
    out = Net(model, phase="TRAIN").forward({"data": x})["conv1_1_3x3_s2"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)  # slope 1, bias 0 (fillers)


def test_segnet_bn_in_learn_mode_normalises_by_the_batch():
    model = blobcast.load(REAL / "enet" / "enet_deploy_final.prototxt")
    shape = [2, 3, 32, 64]
    model.layers[0].spec.input_param.shape[0].dim = shape
    bn = next(layer for layer in model.layers if layer.type == "BN")
    model.layers = model.layers[:model.layers.index(bn) + 1]
    bn.spec.bn_param.bn_mode = "LEARN"  # the fork's default: batch statistics in any phase
    fill_random_weights(model, seed=4)
    x = np.random.RandomState(1).normal(0, 1, shape).astype(np.float32)
    before = Net(blobcast.Model(net=model.net, layers=model.layers[:-1])).forward({"data": x})
    x_bn = before[bn.bottoms[0]].astype(np.float64)
    mean = x_bn.mean(axis=(0, 2, 3), keepdims=True)
    variance = (x_bn * x_bn).mean(axis=(0, 2, 3), keepdims=True) - mean * mean
    scale, shift = (b.data.numpy() for b in bn.blobs)
    expected = (x_bn - mean) / np.sqrt(variance + 1e-9) * scale + shift
    out = Net(model).forward({"data": x})[bn.tops[0]]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(blobcast.BlobcastError, match="batch statistics"):
        from blobcast.converters.onnx_export import build_graph

        build_graph(model, input_shapes={"data": shape}, strict=True)
