"""Target profiles: inspect says whether a net fits a runtime that takes
Caffe (exit 1 when not), and convert --target writes only a net that fits."""

import json

import numpy as np
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text
from blobcast.targets import TARGETS, target_named, target_problems

from ..conftest import CAFFE
from ..converters.test_onnx import _onnx_file

ZOO = CAFFE / "zoo"


def test_every_target_names_real_layer_types():
    from blobcast.layers.base import SPECS

    for target in TARGETS.values():
        unknown = sorted(target.types - set(SPECS))
        assert not unknown, (target.name, unknown)


def test_inspect_says_what_does_not_fit_and_exits_1():
    runner = CliRunner()
    done = runner.invoke(app, ["inspect", str(ZOO / "zoo.caffemodel"), "--target", "opencv", "--json"])
    assert done.exit_code == 1
    report = json.loads(done.output)
    assert report["ok"] is False and report["target"]["fits"] is False
    problems = report["target"]["problems"]
    assert "layer 'spp': opencv has no SPP layer" in problems
    assert not any("'conv" in p for p in problems)  # convolutions are fine in OpenCV
    done = runner.invoke(app, ["inspect", str(ZOO / "zoo.caffemodel"), "--target", "caffe"])
    assert done.exit_code == 0 and "fits caffe" in done.output
    done = runner.invoke(app, ["inspect", str(ZOO / "zoo.caffemodel"), "--target", "nope"])
    assert done.exit_code == 2 and "unknown target 'nope'" in done.output


def test_caffe_1_0_cannot_read_round_mode():
    model = net_from_text('layer { name: "data" type: "Input" top: "data" '
                          'input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }'
                          'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
                          'pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }', "<p>")
    assert target_problems(model, target_named("caffe")) == []
    assert target_problems(model, target_named("caffe-1.0")) == [
        "layer 'pool' (Pooling): caffe-1.0 cannot read pooling_param.round_mode"]


def test_convert_for_opencv_writes_only_what_opencv_creates(tmp_path):
    rng = np.random.RandomState(0)
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["sum"], name="sum")]
    init = {"w": rng.standard_normal((3, 3, 3, 3)).astype(np.float32),
            "b": rng.standard_normal(3).astype(np.float32)}
    fits = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                      [V("sum", TensorProto.FLOAT, None)], init, name="fits.onnx")
    report = blobcast.convert(fits, tmp_path / "fits.caffemodel", target="opencv")
    assert report.forward["passed"]
    # A per-channel Add on the network input has no layer to fold into: a Bias,
    # which OpenCV 4 cannot create.
    nodes = [helper.make_node("Add", ["x", "shift"], ["y"], name="shift"),
             helper.make_node("Relu", ["y"], ["r"], name="relu")]
    lacks = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                       [V("r", TensorProto.FLOAT, None)],
                       {"shift": rng.standard_normal((1, 3, 1, 1)).astype(np.float32)}, name="lacks.onnx")
    done = CliRunner().invoke(app, ["convert", str(lacks), str(tmp_path / "lacks.caffemodel"),
                                    "--target", "opencv"])
    assert done.exit_code == 1
    assert "layer 'shift': opencv has no Bias layer" in done.output
    assert not (tmp_path / "lacks.caffemodel").exists() and not (tmp_path / "lacks.prototxt").exists()
    done = CliRunner().invoke(app, ["convert", str(ZOO / "zoo.caffemodel"), str(tmp_path / "z.onnx"),
                                    "--target", "opencv"])
    assert done.exit_code == 2 and "goes with a Caffe net" in done.output


def _mobilenet_style_onnx(tmp_path):
    """Conv -> Clip(0, 6) -> depthwise Conv -> Clip(0, 6) -> GlobalAveragePool -> Gemm, as torch.onnx writes it."""
    rng = np.random.RandomState(1)
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["c1", "zero", "six"], ["r1"], name="relu6_1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=8),
             helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6_2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], name="fc", transB=1)]
    init = {"w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "b1": rng.standard_normal(8).astype(np.float32),
            "w2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "b2": rng.standard_normal(8).astype(np.float32),
            "fw": rng.standard_normal((5, 8)).astype(np.float32), "fb": rng.standard_normal(5).astype(np.float32),
            "zero": np.float32(0), "six": np.float32(6)}
    return _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                      [V("logits", TensorProto.FLOAT, None)], init, name="mobile.onnx")


def test_for_opencv_clip_0_6_becomes_relu6_and_opencv_runs_the_net(tmp_path):
    path = _mobilenet_style_onnx(tmp_path)
    report = blobcast.convert(path, tmp_path / "mobile.caffemodel", target="opencv")
    assert report.forward["passed"]
    assert any("Clip(0, 6) as ReLU6" in note for note in report.notes)
    assert any(note.startswith("OpenCV runs it: 1 outputs agree") for note in report.notes)
    model = blobcast.load(tmp_path / "mobile.caffemodel", prototxt=tmp_path / "mobile.prototxt")
    assert [layer.type for layer in model.layers] == ["Input", "Convolution", "ReLU6", "Convolution", "ReLU6",
                                                      "Pooling", "InnerProduct"]
    # BVLC Caffe has Clip, not the forks' ReLU6: the same net for it keeps Clip.
    blobcast.convert(path, tmp_path / "bvlc.caffemodel", target="caffe")
    bvlc = blobcast.load(tmp_path / "bvlc.caffemodel", prototxt=tmp_path / "bvlc.prototxt")
    assert [layer.type for layer in bvlc.layers].count("Clip") == 2


def test_a_net_opencv_computes_differently_is_not_written(tmp_path, monkeypatch):
    from blobcast.converters import opencv_check

    real = opencv_check.run_in_opencv
    monkeypatch.setattr(opencv_check, "run_in_opencv",
                        lambda *args: {name: value + 1 for name, value in real(*args).items()})
    done = CliRunner().invoke(app, ["convert", str(_mobilenet_style_onnx(tmp_path)),
                                    str(tmp_path / "out.caffemodel"), "--target", "opencv"])
    assert done.exit_code == 1 and "OpenCV computes differently: output 'logits'" in done.output
    assert not (tmp_path / "out.caffemodel").exists()


@pytest.mark.slow
def test_a_real_yolo_net_runs_whole_in_opencv_with_its_upsamples_as_deconvolutions(tmp_path):
    # yoloface-500k (fixtures/real): darknet's nearest Upsample, which OpenCV 4 cannot create.
    from pathlib import Path

    from blobcast.engine import Net

    real = Path(__file__).resolve().parents[2] / "fixtures" / "real" / "yoloface-500k"
    weights, prototxt = real / "yoloface-500k-v2.caffemodel", real / "yoloface-500k-v2.prototxt"
    report = blobcast.convert(weights, tmp_path / "yolo.caffemodel", prototxt=prototxt, target="opencv")
    assert any("layer74-upsample': nearest Upsample as a fixed Deconvolution" in n for n in report.notes)
    assert any(n.startswith("OpenCV runs it: 3 outputs agree") for n in report.notes)
    lowered = blobcast.load(tmp_path / "yolo.caffemodel")
    assert "Upsample" not in {layer.type for layer in lowered.layers}
    original = blobcast.load(weights, prototxt=prototxt)
    x = np.random.default_rng(9).standard_normal(tuple(Net(original).inputs["data"])).astype(np.float32)
    ours, theirs = Net(original).forward({"data": x}), Net(lowered).forward({"data": x})
    assert ours.keys() == theirs.keys()
    for name in ours:  # the same values: one input times 1.0 for each output
        assert np.array_equal(ours[name], theirs[name]), name


def test_for_bvlc_caffe_relu6_becomes_clip_with_its_bounds(tmp_path):
    from blobcast.engine import Net
    from blobcast.targets import lower_for

    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
            'layer { name: "r6" type: "ReLU6" bottom: "data" top: "out" }\n')
    model = net_from_text(text, "<relu6>")
    assert lower_for(model, target_named("caffe")) == ["layer 'r6': ReLU6 as Clip(0, 6)"]
    assert model["r6"].type == "Clip" and model["r6"].spec.clip_param.to_dict() == {"min": 0.0, "max": 6.0}
    x = np.linspace(-10, 10, 32, dtype=np.float32).reshape(1, 2, 4, 4)
    assert np.array_equal(Net(model).forward({"data": x})["out"], np.clip(x, 0, 6))


@pytest.mark.parametrize("target", ["caffe-1.0", "nnie"])
def test_without_clip_or_relu6_a_clip_is_written_exactly_in_caffe_1_0_layers(target, tmp_path):
    import cv2

    from blobcast.engine import Net

    path = _mobilenet_style_onnx(tmp_path)
    report = blobcast.convert(path, tmp_path / "m.caffemodel", target=target)
    assert any("Clip(0, 6) as ReLU, Eltwise MAX and Power layers" in note for note in report.notes)
    lowered = blobcast.load(tmp_path / "m.caffemodel", prototxt=tmp_path / "m.prototxt")
    kinds = [layer.type for layer in lowered.layers]
    assert "Clip" not in kinds and "ReLU6" not in kinds and not target_problems(lowered, target_named(target))
    plain = blobcast.load(_convert_plain(path, tmp_path))
    x = np.random.default_rng(3).normal(0, 4, (1, 3, 16, 16)).astype(np.float32)
    theirs, ours = Net(plain).forward({"x": x}, keep_all=True), Net(lowered).forward({"x": x}, keep_all=True)
    assert np.array_equal(ours["logits"], theirs["logits"])  # exact, not close
    inner = next(layer.tops[0] for layer in plain.layers if layer.type == "Clip")
    assert np.array_equal(ours[inner], theirs[inner]) and (theirs[inner] == 6).any()
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "m.prototxt"), str(tmp_path / "m.caffemodel"))
    net.setInput(x)
    np.testing.assert_allclose(net.forward().reshape(1, 5), theirs["logits"], rtol=1e-5, atol=1e-5)


def _convert_plain(path, tmp_path):
    out = tmp_path / "plain.caffemodel"
    blobcast.convert(path, out)
    return out


def test_a_clip_with_a_lower_bound_is_exact_too():
    from blobcast.engine import Net
    from blobcast.targets import lower_for

    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n'
            'layer { name: "c" type: "Clip" bottom: "data" top: "out" clip_param { min: -1.5 max: 0.25 } }\n')
    model = net_from_text(text, "<clip>")
    lower_for(model, target_named("caffe-1.0"))
    assert [layer.type for layer in model.layers][1:] == ["Power", "Eltwise", "Power", "Power", "Eltwise", "Power"]
    assert model.layers[-1].name == "c" and model.layers[-1].tops == ["out"]
    x = np.random.default_rng(0).normal(0, 2, (1, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(Net(model).forward({"data": x})["out"], np.clip(x, np.float32(-1.5), np.float32(0.25)))


UPSAMPLES = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
             'layer { name: "up" type: "Upsample" bottom: "data" top: "up" upsample_param { scale: 2 } }\n')


def test_each_target_gets_the_upsample_it_has():
    from blobcast.targets import lower_for

    for name, kind in (("rknn", "Upsample"), ("nnie", "Deconvolution"), ("opencv", "Deconvolution")):
        model = net_from_text(UPSAMPLES, "<up>")
        lower_for(model, target_named(name))
        assert model["up"].type == kind, name
        assert not target_problems(model, target_named(name))
    # NNIE's Upsample is SegNet's unpooling: a nearest one left as it is does not fit
    problems = target_problems(net_from_text(UPSAMPLES, "<up>"), target_named("nnie"))
    assert problems == ["layer 'up': nnie's Upsample is SegNet's unpooling; this one is the YOLO "
                        "forks' nearest one"]


def test_for_ncsdk_inputs_are_written_as_the_nets_input_fields(tmp_path):
    import cv2

    from blobcast.engine import Net

    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 4 kernel_size: 3 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "conv" top: "out" }\n')
    model = net_from_text(text, "<ncsdk>")
    rng = np.random.default_rng(1)
    model["conv"].blobs = [blobcast.Blob(rng.normal(0, 1, s).astype(np.float32)) for s in ((4, 3, 3, 3), (4,))]
    assert target_problems(model, target_named("ncsdk")) == [
        "layer 'data': ncsdk reads inputs only as the net's input/input_shape fields (convert "
        "--target writes them so)"]
    source = tmp_path / "net.caffemodel"
    blobcast.save(model, source)
    out = tmp_path / "ncsdk.caffemodel"
    report = blobcast.convert(source, out, target="ncsdk")
    assert "for ncsdk: the net's inputs as its input/input_shape fields" in report.notes
    blobcast.convert(out, tmp_path / "ncsdk.prototxt", target="ncsdk")
    written = (tmp_path / "ncsdk.prototxt").read_text()
    assert 'input: "data"' in written and "input_shape" in written and 'type: "Input"' not in written
    back = blobcast.load(out)  # read as Caffe reads it: an Input layer named "input"
    assert (back.layers[0].name, back.layers[0].type) == ("input", "Input")
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "ncsdk.prototxt"), str(out))
    net.setInput(x)
    np.testing.assert_allclose(net.forward(), Net(model).forward({"data": x})["out"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 1.5])
def test_swish_is_written_for_caffe_1_0_as_the_sigmoid_and_product_it_computes(beta):
    from blobcast.engine import Net
    from blobcast.targets import lower_for

    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }\n'
            f'layer {{ name: "s" type: "Swish" bottom: "data" top: "out" swish_param {{ beta: {beta} }} }}\n')
    model = net_from_text(text, "<swish>")
    x = np.random.default_rng(2).normal(0, 3, (2, 3, 5, 5)).astype(np.float32)
    expected = Net(model).forward({"data": x})["out"]
    assert lower_for(model, target_named("caffe-1.0")) == ["layer 's': Swish as Sigmoid and Eltwise PROD layers"]
    kinds = [layer.type for layer in model.layers][1:]
    assert kinds == (["Sigmoid", "Eltwise"] if beta == 1 else ["Power", "Sigmoid", "Eltwise"])
    assert not target_problems(model, target_named("caffe-1.0"))
    np.testing.assert_allclose(Net(model).forward({"data": x})["out"], expected, rtol=2e-7, atol=1e-7)
