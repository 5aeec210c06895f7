"""Fork layers through ONNX and back: SSD's DetectionOutput in standard ops
against the SSD fork's own detections, and every fork layer restored as
itself from its function call."""

import warnings

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest

import blobcast
from blobcast.converters.caffe_net import layer_pb
from blobcast.converters.onnx_ops import exported_as_function
from blobcast.engine import Net

from ..blobcast.layers.test_fork_layers import MOBILE_SSD_HEAD, _with_weights
from ..conftest import ROOT

SSD = ROOT / "fixtures" / "caffe" / "ssd"
# Tied scores at a keep_top_k cut: the fork's unstable std::sort keeps the same
# rows in its own order (tests/blobcast/layers/test_detection.py shows the rows are the same).
UNSTABLE_TIES = {"b_center", "b_noshare", "b_noshare_nobg"}


def _ssd_case(stem):
    model = blobcast.load(SSD / f"{stem}.caffemodel", prototxt=SSD / f"{stem}.prototxt")
    net = Net(model)
    if stem == "synth_a":
        inputs = {"data": np.load(SSD / "synth_a_input_data.npy")}
    else:
        inputs = {name: np.load(SSD / f"{stem}_input_{name}.npy") for name in net.inputs}
    return model, inputs, np.load(SSD / f"{stem}_blobs.npz")


def _run(path, inputs):
    session = ort.InferenceSession(str(path))
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


@pytest.mark.parametrize("stem", [pytest.param("synth_a", marks=pytest.mark.slow), "synth_b_detout"])
def test_detection_output_in_standard_onnx_gives_the_forks_detections(tmp_path, stem):
    model, inputs, golden = _ssd_case(stem)
    adaptive = [layer.name for layer in model.layers
                if layer.type == "DetectionOutput" and layer.type_params.nms_param.eta != 1]
    model.layers = [layer for layer in model.layers if layer.name not in adaptive]
    path = tmp_path / f"{stem}.onnx"
    blobcast.save(model, path)
    written = onnx.load(path)
    onnx.checker.check_model(written, full_check=True)
    calls = [node for node in written.graph.node if node.op_type.startswith("DetectionOutput")]
    detections = [layer for layer in model.layers if layer.type == "DetectionOutput"]
    assert len(calls) == len(detections) >= 5  # one node per layer
    assert {node.domain for node in calls} == {"ai.blobcast.caffe"}
    inlined = onnx.inliner.inline_local_functions(written)
    assert {node.domain for node in inlined.graph.node} == {""}
    assert "NonMaxSuppression" in {node.op_type for node in inlined.graph.node}
    ours = Net(model).forward(inputs, keep_all=True)
    theirs = _run(path, inputs)
    for layer in detections:
        top = layer.tops[0]
        assert theirs[top].shape == golden[top].shape == ours[top].shape, top
        np.testing.assert_allclose(theirs[top], ours[top], atol=1e-6, rtol=1e-6, err_msg=top)  # exp: 1 ulp
        if top in UNSTABLE_TIES:
            continue
        np.testing.assert_allclose(theirs[top], golden[top], atol=3e-6, rtol=1e-5, err_msg=top)


def test_nothing_detected_gives_one_row_per_image_in_onnx(tmp_path):
    model, inputs, golden = _ssd_case("synth_a")
    model.layers = [layer for layer in model.layers
                    if layer.type != "DetectionOutput" or layer.name == "det_empty"]
    blobcast.save(model, tmp_path / "empty.onnx")
    rows = _run(tmp_path / "empty.onnx", inputs)["det_empty"]
    assert rows[0, 0].tolist() == golden["det_empty"][0, 0].tolist() == [
        [i, -1, -1, -1, -1, -1, -1] for i in range(2)]


def test_adaptive_nms_is_a_custom_node_and_strict_refuses_it(tmp_path):
    model, _, _ = _ssd_case("synth_a")
    with pytest.warns(blobcast.BlobcastWarning, match=r"det_eta \(DetectionOutput: eta 0.9 \(adaptive NMS\)\)"):
        blobcast.save(model, tmp_path / "eta.onnx")
    custom = [node for node in onnx.load(tmp_path / "eta.onnx").graph.node if node.domain == "ai.blobcast"]
    assert [node.name for node in custom] == ["det_eta"]
    with pytest.raises(blobcast.BlobcastError, match="--strict refuses"):
        blobcast.save(model, tmp_path / "strict.onnx", strict=True)


def _same_layers(original, restored):
    """The layers exported as one call or custom node come back identical."""
    ours = {layer.name: layer for layer in restored.layers}
    compared = 0
    for layer in original.layers:
        if not exported_as_function(layer) and layer.type != "Python":
            continue
        compared += 1
        back = ours[layer.name]
        assert layer_pb(back).SerializeToString() == layer_pb(layer).SerializeToString(), layer.name
        for blob, again in zip(layer.blobs, back.blobs):
            assert np.array_equal(np.asarray(blob.data), np.asarray(again.data)), layer.name
    assert compared


@pytest.mark.slow
def test_the_ssd_net_comes_back_from_onnx_layer_for_layer(tmp_path, ssd_synth_a_blobs):
    model, inputs, _ = _ssd_case("synth_a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", blobcast.BlobcastWarning)  # det_eta: a custom node
        blobcast.save(model, tmp_path / "ssd.onnx")
    back = blobcast.load(tmp_path / "ssd.onnx")
    kinds = {layer.type for layer in back.layers}
    assert {"PriorBox", "DetectionOutput", "Normalize", "Permute"} <= kinds
    _same_layers(model, back)
    ours, again = ssd_synth_a_blobs, Net(back).forward(inputs)
    assert set(again) == set(Net(model).outputs)
    for name in again:
        np.testing.assert_array_equal(ours[name], again[name], err_msg=name)


def test_every_fork_layer_comes_back_from_onnx_as_itself(tmp_path):
    text = MOBILE_SSD_HEAD + (
        'layer { name: "up" type: "Upsample" bottom: "relu6" top: "up" upsample_param { scale: 2 } }\n'
        'layer { name: "gap" type: "Pooling" bottom: "relu6" top: "gate" pooling_param { pool: AVE global_pooling: true } }\n'
        'layer { name: "axpy" type: "Axpy" bottom: "gate" bottom: "relu6" bottom: "dw" top: "axpy" }\n'
        'layer { name: "interp" type: "Interp" bottom: "axpy" top: "interp"\n'
        '        interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -1 } }\n')
    prototxt, weights = _with_weights(text, tmp_path)
    model = blobcast.load(weights, prototxt=prototxt)
    blobcast.save(model, tmp_path / "forks.onnx")
    back = blobcast.load(tmp_path / "forks.onnx")
    restored = {layer.name: layer.type for layer in back.layers}
    for name in ("relu6", "shuffle", "norm", "norm_all", "permute", "up", "axpy", "interp"):
        assert restored[name] == model[name].type
    # depthwise convolutions come back as what they are: Convolution with group == channels
    assert restored["dw"] == restored["dw2"] == "Convolution"
    _same_layers(model, back)
    x = np.random.RandomState(1).normal(size=(2, 8, 10, 12)).astype(np.float32)
    ours, again = Net(model).forward({"data": x}), Net(back).forward({"data": x})
    for name in ours:
        np.testing.assert_allclose(again[name], ours[name], atol=1e-6, err_msg=name)


def test_a_custom_node_comes_back_as_its_caffe_layer(tmp_path):
    model = blobcast.load(ROOT / "fixtures" / "generated" / "lenet.caffemodel")
    model.layers.append(blobcast.Layer("decode", "Python", bottoms=["prob"], tops=["boxes"],
                                       python_param={"module": "detect", "layer": "Decode",
                                                     "param_str": "k=3"}))
    with pytest.warns(blobcast.BlobcastWarning, match="decode"):
        blobcast.save(model, tmp_path / "custom.onnx", given_shapes={"boxes": [64, 4]})
    back = blobcast.load(tmp_path / "custom.onnx")
    assert back["decode"].type == "Python" and back["decode"].bottoms == ["prob"]
    assert layer_pb(back["decode"]).SerializeToString() == layer_pb(model["decode"]).SerializeToString()


@pytest.mark.slow
def test_keep_top_k_of_a_single_image_in_onnx(tmp_path):
    # a batch of one takes TopK instead of ranking every row against every other
    model, inputs, _ = _ssd_case("synth_a")
    keeping = [layer.name for layer in model.layers if layer.type == "DetectionOutput"
               and layer.type_params.keep_top_k > -1 and layer.type_params.nms_param.eta == 1]
    model.layers = [layer for layer in model.layers
                    if layer.type != "DetectionOutput" or layer.name in keeping]
    first = {"data": inputs["data"][:1]}
    blobcast.save(model, tmp_path / "one.onnx", input_shapes={"data": first["data"].shape})
    inlined = onnx.inliner.inline_local_functions(onnx.load(tmp_path / "one.onnx"))
    assert "ReduceSum" not in {node.op_type for node in inlined.graph.node}
    theirs = _run(tmp_path / "one.onnx", first)
    ours = Net(model).forward(first)
    assert len(keeping) >= 3
    for name in keeping:
        top = model[name].tops[0]
        assert theirs[top].shape == ours[top].shape, name
        np.testing.assert_allclose(theirs[top], ours[top], atol=1e-6, rtol=1e-6, err_msg=name)
