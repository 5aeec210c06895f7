"""ONNX both ways, checked against real Caffe's outputs and onnxruntime."""

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import blobcast
from blobcast.check import compare_arrays
from blobcast.converters.onnx_export import DEFAULT_OPSET
from blobcast.converters.onnx_versions import runtime_newest_opset
from blobcast.engine import Net

from ..conftest import CAFFE, GENERATED, views_a_file_mapping
from ..netgen import with_random_weights

ort = pytest.importorskip("onnxruntime")


def ort_run(path, feeds, names=None):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = names or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def assert_close(name, ours, theirs, atol=1e-5, rtol=1e-3):
    result = compare_arrays(name, ours, theirs, atol, rtol)
    assert result.passed, result


def every_value_has_a_shape(model) -> list[str]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name for v in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    return [o for n in model.graph.node for o in n.output if o and o not in known]


def test_zoo_exports_checks_and_matches_caffe_in_onnxruntime(tmp_path):
    out = tmp_path / "zoo.onnx"
    report = blobcast.convert(CAFFE / "zoo" / "zoo.caffemodel", out,
                              prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    assert report.check == "onnx checker (full)" and report.forward["outputs"] == 40
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert every_value_has_a_shape(model) == []
    # The newest opset blobcast writes, unless the installed onnx or onnxruntime is older.
    newest_taken = [onnx.defs.onnx_opset_version(),
                    runtime_newest_opset(ort.__version__) or DEFAULT_OPSET]
    assert model.opset_import[0].version == min([DEFAULT_OPSET] + newest_taken)
    initializers = {t.name for t in model.graph.initializer}
    assert not initializers & {i.name for i in model.graph.input}
    assert {n.name for n in model.graph.node} >= {"conv_g", "deconv", "pool_ave_clip", "lrn_within"}
    recorded = np.load(CAFFE / "zoo" / "zoo_blobs.npz")
    outputs = ort_run(out, {"data": np.load(CAFFE / "zoo" / "zoo_input.npy")})
    assert len(outputs) == 40
    for name, value in outputs.items():  # value names are Caffe's blob names
        assert_close(name, value, recorded[name])


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_lenet_snapshots_in_onnxruntime_match_caffe(kind, tmp_path):
    out = tmp_path / "lenet.onnx"
    blobcast.convert(CAFFE / "lenet" / "snapshots" / f"{kind}_bp_iter_5.caffemodel", out,
                     prototxt=CAFFE / "lenet" / "lenet_deploy.prototxt")
    recorded = np.load(CAFFE / "lenet" / "lenet_forward.npz")
    outputs = ort_run(out, {"data": recorded["input"]})
    assert_close("prob", outputs["prob"], recorded[f"{kind}_bp_iter_5_caffemodel__prob"])


RESNET = """
name: "mini-resnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 16 kernel_size: 7 stride: 2 pad: 3 bias_term: false } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "scale_conv1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "res2a_branch1" type: "Convolution" bottom: "pool1" top: "res2a_branch1" convolution_param { num_output: 32 kernel_size: 1 bias_term: false } }
layer { name: "bn2a_branch1" type: "BatchNorm" bottom: "res2a_branch1" top: "res2a_branch1" }
layer { name: "scale2a_branch1" type: "Scale" bottom: "res2a_branch1" top: "res2a_branch1" scale_param { bias_term: true } }
layer { name: "res2a_branch2a" type: "Convolution" bottom: "pool1" top: "res2a_branch2a" convolution_param { num_output: 8 kernel_size: 1 bias_term: false } }
layer { name: "bn2a_branch2a" type: "BatchNorm" bottom: "res2a_branch2a" top: "res2a_branch2a" }
layer { name: "scale2a_branch2a" type: "Scale" bottom: "res2a_branch2a" top: "res2a_branch2a" scale_param { bias_term: true } }
layer { name: "res2a_branch2a_relu" type: "ReLU" bottom: "res2a_branch2a" top: "res2a_branch2a" }
layer { name: "res2a_branch2b" type: "Convolution" bottom: "res2a_branch2a" top: "res2a_branch2b" convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn2a_branch2b" type: "BatchNorm" bottom: "res2a_branch2b" top: "res2a_branch2b" }
layer { name: "scale2a_branch2b" type: "Scale" bottom: "res2a_branch2b" top: "res2a_branch2b" scale_param { bias_term: true } }
layer { name: "res2a_branch2b_relu" type: "ReLU" bottom: "res2a_branch2b" top: "res2a_branch2b" }
layer { name: "res2a_branch2c" type: "Convolution" bottom: "res2a_branch2b" top: "res2a_branch2c" convolution_param { num_output: 32 kernel_size: 1 bias_term: false } }
layer { name: "bn2a_branch2c" type: "BatchNorm" bottom: "res2a_branch2c" top: "res2a_branch2c" }
layer { name: "scale2a_branch2c" type: "Scale" bottom: "res2a_branch2c" top: "res2a_branch2c" scale_param { bias_term: true } }
layer { name: "res2a" type: "Eltwise" bottom: "res2a_branch1" bottom: "res2a_branch2c" top: "res2a" }
layer { name: "res2a_relu" type: "ReLU" bottom: "res2a" top: "res2a" }
layer { name: "pool5" type: "Pooling" bottom: "res2a" top: "pool5" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool5" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def resnet(tmp_path):
    model = with_random_weights(RESNET, {"data": (2, 3, 32, 32)}, seed=5)
    path = tmp_path / "resnet.caffemodel"
    blobcast.save(model, path)
    return path


@pytest.mark.parametrize("opset", [17, 26])
def test_resnet_class_net_round_trips_through_onnx(resnet, tmp_path, opset):
    if opset > min(onnx.defs.onnx_opset_version(), runtime_newest_opset(ort.__version__) or opset):
        pytest.skip(f"the installed onnx or onnxruntime predates opset {opset}")
    onnx_path = tmp_path / "resnet.onnx"
    blobcast.convert(resnet, onnx_path, onnx_options={"opset": opset})
    model = onnx.load(onnx_path)
    onnx.checker.check_model(model, full_check=True)
    assert every_value_has_a_shape(model) == []
    x = np.random.RandomState(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    caffe_net = Net(blobcast.load(resnet))
    ours = caffe_net.forward({"data": x}, keep_all=True)
    assert_close("prob", ours["prob"], ort_run(onnx_path, {"data": x})["prob"])
    from blobcast.converters.onnx_runner import OnnxRunner

    every = OnnxRunner(str(onnx_path)).forward({"data": x}, keep_all=True)
    assert_close("fc", ours["fc"], every["fc"])  # the logits, before the softmax flattens them
    assert_close("res2a", ours["res2a"], every["res2a"])
    back = tmp_path / "back.caffemodel"
    report = blobcast.convert(onnx_path, back)
    assert report.forward["passed"] and (tmp_path / "back.prototxt").exists()
    again = Net(blobcast.load(back, prototxt=tmp_path / "back.prototxt")).forward({"data": x},
                                                                                   keep_all=True)
    assert_close("fc", again["fc"], ours["fc"])


def test_dynamic_batch_and_input_override(resnet, tmp_path):
    onnx_path = tmp_path / "dyn.onnx"
    blobcast.convert(resnet, onnx_path, onnx_options={"dynamic_batch": True,
                                                      "input_shapes": {"data": [1, 3, 32, 32]}})
    model = onnx.load(onnx_path)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 5):
        x = np.random.RandomState(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        ours = Net(blobcast.load(resnet)).forward({"data": x})["prob"]
        assert_close("prob", ort_run(onnx_path, {"data": x})["prob"], ours)


def test_external_data_written_and_read_back(resnet, tmp_path):
    onnx_path = tmp_path / "ext.onnx"
    blobcast.convert(resnet, onnx_path, onnx_options={"external_data": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.onnx", "ext.onnx.data", "resnet.caffemodel"]
    model = onnx.load(onnx_path, load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    imported = blobcast.load(onnx_path)
    conv = imported["conv1"].blobs[0].data
    assert not conv.is_loaded and views_a_file_mapping(conv.numpy())
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert_close("prob", ort_run(onnx_path, {"data": x})["prob"],
                 Net(blobcast.load(resnet)).forward({"data": x})["prob"])


@pytest.mark.slow
def test_a_model_over_2_gb_writes_external_data(tmp_path):
    rows, columns = 16384, 32769  # 2.0000 GiB + a little, float32
    weights_file = tmp_path / "weights.bin"
    with open(weights_file, "wb") as handle:
        handle.truncate(rows * columns * 4)  # sparse: no disk used for the zeros
    weights = np.memmap(weights_file, dtype="<f4", mode="r+", shape=(rows, columns))
    weights[0, :3] = [1.0, 2.0, 3.0]
    weights[-1, -1] = 7.0
    weights.flush()
    model = blobcast.Model()
    model.layers.append(blobcast.Layer("data", "Input", tops=["data"],
                                       input_param={"shape": [{"dim": [1, columns]}]}))
    fc = blobcast.Layer("fc", "InnerProduct", bottoms=["data"], tops=["fc"],
                        blobs=[np.memmap(weights_file, dtype="<f4", mode="r", shape=(rows, columns))])
    fc.type_params.num_output, fc.type_params.bias_term = rows, False
    model.layers.append(fc)
    out = tmp_path / "big.onnx"
    blobcast.save(model, out)
    assert os.path.getsize(out) < 10_000 and os.path.getsize(str(out) + ".data") >= rows * columns * 4
    back = blobcast.load(out)["fc"].blobs[0].data.numpy()
    assert views_a_file_mapping(back) and back.shape == (rows, columns)
    assert list(back[0, :3]) == [1.0, 2.0, 3.0] and back[-1, -1] == 7.0


def _external_model(tmp_path, location):
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("location,problem", [
    ("../../etc/passwd", "points outside the model's folder"),
    ("/etc/passwd", "is an absolute path"),
    ("missing.bin", "is missing"),
    ("link.bin", "points outside the model's folder"),
    ("short.bin", "runs past the end"),
])
def test_external_data_may_not_escape_or_be_short(tmp_path, location, problem):
    path = _external_model(tmp_path, location)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    (path.parent / "link.bin").symlink_to(tmp_path / "outside.bin")
    (path.parent / "short.bin").write_bytes(b"\0" * 8)
    with pytest.raises(blobcast.FormatError, match=problem):
        blobcast.load(path)
    with pytest.raises(blobcast.BlobcastError, match=problem):
        from blobcast.check import RunOptions, run_model

        run_model(str(path), RunOptions())


def _onnx_file(tmp_path, nodes, inputs, outputs, initializers, name="import.onnx", opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    path = tmp_path / name
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                       ir_version=8).SerializeToString())
    return path


def test_import_maps_the_common_ops_and_computes_the_same(tmp_path):
    rng = np.random.RandomState(0)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    V = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "m", "v"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("PRelu", ["bn", "slope"], ["pr"], name="prelu"),
        helper.make_node("MaxPool", ["pr"], ["mp"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
                         ceil_mode=1),
        helper.make_node("AveragePool", ["mp"], ["ap"], name="avgpool", kernel_shape=[3, 3], strides=[1, 1],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Mul", ["ap", "chan"], ["sc"], name="scale"),
        helper.make_node("Add", ["sc", "chan_bias"], ["sh"], name="shift"),
        helper.make_node("Mul", ["sh", "half"], ["hm"], name="half"),
        helper.make_node("LeakyRelu", ["hm"], ["lr"], name="leaky", alpha=0.2),
        helper.make_node("LRN", ["lr"], ["lrn"], name="lrn", size=3, alpha=0.01, beta=0.75, bias=1.5),
        helper.make_node("ConvTranspose", ["lrn", "wt"], ["up"], name="deconv", strides=[2, 2],
                         kernel_shape=[2, 2]),
        helper.make_node("Resize", ["lrn", "", "scales"], ["nearest"], name="resize", mode="nearest"),
        helper.make_node("Concat", ["up", "nearest"], ["cat"], name="concat", axis=1),
        helper.make_node("Split", ["cat", "split"], ["s1", "s2"], name="split", axis=1),
        helper.make_node("Sub", ["s1", "s2"], ["diff"], name="sub"),
        helper.make_node("Clip", ["diff", "lo", "hi"], ["clip"], name="clip"),
        helper.make_node("Slice", ["clip", "starts", "ends", "axes"], ["sl"], name="slice"),
        helper.make_node("Shape", ["sl"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Concat", ["batch", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["sl", "target"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["fc"], name="fc", transB=1),
        helper.make_node("Sigmoid", ["fc"], ["sig"], name="sigmoid"),
        helper.make_node("MatMul", ["sig", "mm"], ["mmo"], name="matmul"),
        helper.make_node("Tanh", ["mmo"], ["th"], name="tanh"),
        helper.make_node("Dropout", ["th"], ["do"], name="dropout"),
        helper.make_node("Softmax", ["do"], ["prob"], name="softmax", axis=1),
        helper.make_node("GlobalAveragePool", ["pr"], ["gap"], name="gap"),
    ]
    init = {"w1": f32(6, 3, 3, 3), "b1": f32(6), "g": f32(6), "beta": f32(6), "m": f32(6),
            "v": np.abs(f32(6)) + 0.5, "slope": np.abs(f32(6, 1, 1)), "chan": f32(1, 6, 1, 1),
            "chan_bias": f32(6, 1, 1), "half": np.float32(0.5), "wt": f32(6, 6, 2, 2),
            "scales": np.array([1, 1, 2, 2], np.float32), "split": np.array([6, 6], np.int64),
            "lo": np.float32(-1.5), "hi": np.float32(1.5), "starts": np.array([1], np.int64),
            "ends": np.array([3], np.int64), "axes": np.array([1], np.int64),
            "zero": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
            "fcw": f32(7, 2 * 10 * 10), "fcb": f32(7), "mm": f32(7, 5)}
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [2, 3, 10, 10])],
                      [V("prob", TensorProto.FLOAT, None), V("gap", TensorProto.FLOAT, None)], init)
    report = blobcast.convert(path, tmp_path / "imported.caffemodel")
    assert report.forward["passed"] and report.forward["outputs"] == 2
    model = blobcast.load(tmp_path / "imported.caffemodel")
    types = {layer.type for layer in model}
    assert {"Convolution", "BatchNorm", "Scale", "PReLU", "Pooling", "Power", "ReLU", "LRN",
            "Deconvolution", "Concat", "Slice", "Eltwise", "Clip", "InnerProduct", "Sigmoid",
            "TanH", "Softmax"} <= types
    # Mul + Add by constants became one Scale with a bias; the Reshape before
    # Gemm went, as InnerProduct flattens its input itself.
    assert "Bias" not in types and "Reshape" not in types
    assert model["shift"].type == "Scale" and model["shift"].type_params.bias_term
    x = np.random.RandomState(1).standard_normal((2, 3, 10, 10)).astype(np.float32)
    theirs = ort_run(path, {"x": x})
    ours = Net(model).forward({"x": x})
    for name in ("prob", "gap"):
        assert_close(name, ours[name], theirs[name])


def test_import_names_every_unsupported_node_at_once(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok"),
             helper.make_node("Erf", ["r"], ["e"], name="erf_node"),
             helper.make_node("Pad", ["e", "pads"], ["p"], name="pad_node")]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                      [V("p", TensorProto.FLOAT, None)], {"pads": np.zeros(8, np.int64)})
    with pytest.raises(blobcast.FormatError) as caught:
        blobcast.convert(path, tmp_path / "x.caffemodel")
    message = str(caught.value)
    assert "2 ONNX node(s)" in message and "#1 Erf 'erf_node'" in message and "#2 Pad 'pad_node'" in message
    assert not (tmp_path / "x.caffemodel").exists()


def test_layers_without_onnx_equivalent_go_to_a_custom_domain(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    tail = blobcast.Layer("decode", "Python", bottoms=["prob"], tops=["boxes"],
                          python_param={"module": "detect", "layer": "Decode", "param_str": "k=3"})
    model.layers.append(tail)
    with pytest.warns(blobcast.BlobcastWarning, match="custom 'ai.blobcast' nodes: decode \\(Python\\)"):
        blobcast.save(model, tmp_path / "custom.onnx", given_shapes={"boxes": [64, 4]})
    graph = onnx.load(tmp_path / "custom.onnx").graph
    custom = [n for n in graph.node if n.domain == "ai.blobcast"]
    assert [(n.op_type, n.name) for n in custom] == [("Python", "decode")]
    assert {a.name: a.s for a in custom[0].attribute}["param_str"] == b"k=3"
    with pytest.raises(blobcast.BlobcastError, match="--strict refuses"):
        blobcast.save(model, tmp_path / "strict.onnx", strict=True, given_shapes={"boxes": [64, 4]})


def test_onnx_options_only_go_with_onnx(tmp_path):
    with pytest.raises(blobcast.BlobcastError, match="go with an .onnx destination"):
        blobcast.convert(GENERATED / "lenet.caffemodel", tmp_path / "x.caffemodel.h5",
                         onnx_options={"opset": 17})


@pytest.mark.parametrize("pad", [0, 1])
def test_average_pooling_that_overhangs_the_padding_round_trips(tmp_path, pad):
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }\n'
            f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ pool: AVE kernel_size: 3 stride: 2 pad: {pad} }} }}')
    model = with_random_weights(text, {"data": (1, 2, 6, 6)})
    source = tmp_path / "pool.caffemodel"
    blobcast.save(model, source)
    blobcast.convert(source, tmp_path / "pool.onnx")
    x = np.random.RandomState(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    ours = Net(model).forward({"data": x})["pool"]
    assert_close("pool", ort_run(tmp_path / "pool.onnx", {"data": x})["pool"], ours)
    blobcast.convert(tmp_path / "pool.onnx", tmp_path / "back.caffemodel")
    back = blobcast.load(tmp_path / "back.caffemodel")
    assert [layer.type for layer in back] == ["Input", "Pooling"]  # the correction fused back
    assert_close("pool", Net(back).forward({"data": x})["pool"], ours)


def test_cli_onnx_options(resnet, tmp_path):
    from typer.testing import CliRunner

    from blobcast.cli import app

    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(app, ["convert", str(resnet), str(out), "--opset", "18", "--input",
                                      "data=3,3,32,32", "--dynamic-batch", "--external-data", "--strict",
                                      "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert report["destination_format"] == "onnx" and report["forward"]["passed"]
    model = onnx.load(out, load_external_data=False)
    assert model.opset_import[0].version == 18
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert (tmp_path / "cli.onnx.data").exists()
    bad = CliRunner().invoke(app, ["convert", str(resnet), str(tmp_path / "x.onnx"), "--opset", "12"])
    assert bad.exit_code == 2 and "--opset 12: blobcast writes opsets 17 to " in bad.stderr


def test_import_maps_pow_and_tile(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Abs", ["x"], ["a"], name="abs"),
             helper.make_node("Pow", ["a", "e"], ["p"], name="pow"),
             helper.make_node("Tile", ["p", "reps"], ["t"], name="tile")]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 2, 3, 3])], [V("t", TensorProto.FLOAT, None)],
                      {"e": np.float32(1.5), "reps": np.array([1, 3, 1, 1], np.int64)})
    blobcast.convert(path, tmp_path / "pt.caffemodel")
    model = blobcast.load(tmp_path / "pt.caffemodel")
    assert [layer.type for layer in model] == ["Input", "AbsVal", "Power", "Tile"]
    x = np.random.RandomState(4).standard_normal((1, 2, 3, 3)).astype(np.float32)
    assert_close("t", Net(model).forward({"x": x})["t"], ort_run(path, {"x": x})["t"])


def test_without_onnxruntime_the_reference_evaluators_gaps_give_a_note(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    report = blobcast.convert(CAFFE / "zoo" / "zoo.caffemodel", tmp_path / "zoo.onnx")
    assert report.forward is None and (tmp_path / "zoo.onnx").exists()
    note = " ".join(report.notes)
    assert "forward check skipped" in note and "blobcast[onnxruntime]" in note and ".partial" not in note
    report = blobcast.convert(GENERATED / "lenet.caffemodel", tmp_path / "lenet.onnx")
    assert report.forward["passed"]  # the evaluator runs what it can
