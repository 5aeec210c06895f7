"""`inspect` on ONNX files blobcast did not write, and on ones with no Caffe
form: shown as ONNX, exit 0; --target says whether the file fits."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import blobcast
from blobcast.app.inspect import inspect_file
from blobcast.cli import app

from ..conftest import CAFFE

TORCH = CAFFE.parent / "torch"


def _control_flow_model(path):
    """An If node (two subgraphs) and a Relu: valid ONNX, no Caffe form."""
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["then_out"])], "then",
        [], [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 4])])
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["else_out"])], "else",
        [], [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 4])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_graph,
                          else_branch=else_graph)],
        "control", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                    helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="hand-made", producer_version="0.1")
    onnx.save(model, path)


def test_a_control_flow_model_is_shown_as_onnx_with_exit_0(tmp_path):
    path = tmp_path / "control.onnx"
    _control_flow_model(path)
    facts = inspect_file(str(path))
    assert facts["kind"] == "onnx" and facts["caffe"]["converts"] is False
    graph = facts["onnx"]
    assert graph["opsets"] == {"ai.onnx": 17} and graph["producer"] == {"name": "hand-made",
                                                                     "version": "0.1"}
    assert graph["inputs"][0] == {"name": "x", "dtype": "float", "shape": ["N", 4]}
    assert graph["control_flow"] == 1 and graph["op_counts"] == {"Relu": 1, "If": 1}
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "IR version" in result.stdout and "producer hand-made 0.1" in result.stdout
    assert "no Caffe form" in result.stdout and "Caffe opset" not in result.stdout
    result = CliRunner().invoke(app, ["inspect", str(path), "--target", "caffe", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["target"]["fits"] is False and report["target"]["problems"]


def test_blobcasts_own_export_of_the_zoo_is_shown_with_the_nodes_caffe_lacks(tmp_path):
    path = tmp_path / "zoo.onnx"
    blobcast.convert(CAFFE / "zoo" / "zoo.caffemodel", path)
    result = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["ok"] is True and facts["caffe_version"] is None
    problems = " ".join(facts["caffe"]["problems"])
    for op in ("TopK", "Cast", "Gather"):
        assert op in problems
    assert facts["onnx"]["op_counts"]["TopK"] == 2


def test_external_data_is_counted_not_read(tmp_path):
    weights = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    facts = inspect_file(str(path))
    inits = facts["onnx"]["initializers"]
    assert inits["external"] == 1 and inits["values"] == 4096
    assert inits["tensors"][0] == {"name": "w", "dtype": "float", "shape": [64, 64],
                                   "stored": "external"}
    (tmp_path / "ext.onnx.data").unlink()  # a missing companion is still an error
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "missing" in result.output


@pytest.mark.parametrize("name", sorted(p.name for p in TORCH.glob("*.onnx")))
def test_torch_exports_are_shown_with_their_producer(name):
    facts = inspect_file(str(TORCH / name))
    assert facts["onnx"]["producer"]["name"] == "pytorch"
    assert facts["onnx"]["inputs"][0]["name"] and facts["caffe_version"] is None


def test_target_says_what_convert_would_do(tmp_path):
    """ResNet's floor-mode stem pool fits OpenCV after convert's rewrite, as
    `convert --target opencv` writes it; MobileNetV3's gates do not fit TIDL."""
    facts = inspect_file(str(TORCH / "resnet_legacy_op13.onnx"), target="opencv")
    assert facts["target"]["fits"] is True
    assert any("FLOOR pooling as CEIL" in r for r in facts["target"]["rewrites"])
    assert blobcast.convert(TORCH / "resnet_legacy_op13.onnx", tmp_path / "r.caffemodel", target="opencv")
    result = CliRunner().invoke(app, ["inspect", str(TORCH / "mobilenet_v3_dynamo_op23.onnx"),
                                      "--target", "tidl"])
    assert result.exit_code == 1 and "tidl has no Power layer" in result.stdout


def test_an_if_node_counts_its_two_subgraphs(tmp_path):
    path = tmp_path / "control.onnx"
    _control_flow_model(path)
    nodes = inspect_file(str(path))["onnx"]["nodes"]
    assert [n.get("subgraphs") for n in nodes] == [None, 2]
