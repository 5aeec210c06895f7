"""An open schema: fields of any fork, in binary and in text, kept, shown and
written back; a fork's number read as its setting only on its layer type."""

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters import caffe_pb2 as pb
from blobcast.converters.prototxt import net_of_solver, read_solver
from blobcast.converters.text_fields import field_name
from blobcast.converters.wire import encode_tag, encode_varint, length_delimited
from blobcast.engine import Net
from blobcast.errors import BlobcastWarning

from ..conftest import CAFFE, ROOT

runner = CliRunner()
REAL = ROOT / "fixtures" / "real"
COS = REAL / "caffeonspark" / "lenet_memory_iter_1.caffemodel"


def test_caffeonspark_snapshot_opens_and_converts_byte_identical(tmp_path):
    # CaffeOnSpark's string source_class sits at 10001, R-FCN's psroi_pooling_param number.
    model = blobcast.load(COS)
    data = model["data"].spec
    source_class = b"com.yahoo.ml.caffe.LMDB"
    assert data.unknown_fields == length_delimited(10001, len(source_class)) + source_class
    assert data.memory_data_param.batch_size == 64
    assert not data.has("psroi_pooling_param")
    out = tmp_path / "again.caffemodel"
    result = runner.invoke(app, ["convert", str(COS), str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == COS.read_bytes()


def test_inspect_shows_each_unknown_field_by_layer_number_wire_type_and_size():
    result = runner.invoke(app, ["inspect", "--json", str(COS)])
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)["unknown_fields"]
    assert found == [
        {"layer": "data", "where": "", "number": 10001, "wire_type": "length-delimited", "bytes": 23},
        {"layer": "data", "where": "memory_data_param", "number": 10000, "wire_type": "varint",
         "bytes": 1},
        {"layer": "data", "where": "memory_data_param", "number": 10001,
         "wire_type": "length-delimited", "bytes": 48},
    ]
    text = runner.invoke(app, ["inspect", str(COS)]).stdout
    assert "layer 'data': field 10001, length-delimited, 23 B (kept)" in text


def _layer(name, kind, tops, extra=b"") -> bytes:
    raw = pb.LayerParameter(name=name, type=kind, top=tops).SerializeToString() + extra
    return length_delimited(100, len(raw)) + raw


def test_a_fork_number_is_its_setting_only_on_its_layer_type(tmp_path):
    psroi = pb.PSROIPoolingParameter(spatial_scale=0.0625, output_dim=21, group_size=7).SerializeToString()
    text = b"com.yahoo.ml.caffe.LMDB"
    raw = (_layer("data", "MemoryData", ["data"], length_delimited(10001, len(text)) + text)
           + _layer("psroi", "PSROIPooling", ["pooled"], length_delimited(10001, len(psroi)) + psroi))
    path = tmp_path / "both.caffemodel"
    path.write_bytes(raw)
    model = blobcast.load(path)
    assert model["psroi"].spec.psroi_pooling_param.group_size == 7
    assert model["psroi"].spec.unknown_fields == b""
    assert model["data"].spec.unknown_fields == length_delimited(10001, len(text)) + text
    blobcast.save(model, tmp_path / "again.caffemodel")
    assert (tmp_path / "again.caffemodel").read_bytes() == raw


def test_unknown_fields_are_written_back_in_number_order(tmp_path):
    # A fork's protobuf knows its fields and writes them in number order, among Caffe's.
    early = encode_tag(50, 0) + encode_varint(3)  # between include (8) and transform_param (100)
    layer = pb.LayerParameter(name="d", type="MemoryData", top=["d"])
    layer.transform_param.scale = 0.5
    known = layer.SerializeToString()
    split = known.index(b"\xa2\x06")  # transform_param's tag
    raw = known[:split] + early + known[split:]
    path = tmp_path / "order.caffemodel"
    path.write_bytes(length_delimited(100, len(raw)) + raw)
    blobcast.save(blobcast.load(path), tmp_path / "again.caffemodel")
    assert (tmp_path / "again.caffemodel").read_bytes() == path.read_bytes()


def test_an_unknown_field_is_held_to_the_memory_budget(tmp_path):
    payload = bytes(3 * 2**20)
    path = tmp_path / "big_unknown.caffemodel"
    path.write_bytes(_layer("d", "MemoryData", ["d"], length_delimited(10001, len(payload)) + payload))
    result = runner.invoke(app, ["--memory-budget", "1M", "inspect", str(path)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and "memory budget" in lines[0]
    assert "big_unknown.caffemodel" in lines[0] and "Traceback" not in result.stderr
    assert blobcast.load(path)["d"].spec.unknown_fields.endswith(payload)


# Official net definitions with fields the schema lacks.
REAL_TEXT = {
    "opencv-faster-rcnn/faster_rcnn_vgg16.prototxt": ("detection_out", "normalized_bbox", 1),
    "caffeonspark/lenet_memory_train_test.prototxt": ("data", "source_class", 6),
}

# Official net definitions whose fork fields the schema now declares by layer
# type: (layer, settings field); each file had them as unknown text before.
REAL_FORK_SETTINGS = {
    "pspnet/pspnet50_ADE20K_473.prototxt": ("conv1_1_3x3_s2/bn", "bn_param"),
    "enet/enet_deploy_final.prototxt": ("bn0_1", "bn_param"),
    "py-faster-rcnn/ZF_faster_rcnn_end2end_test.prototxt": ("drop6", "dropout_param"),
    "py-faster-rcnn/ZF_fast_rcnn_test.prototxt": ("drop6", "dropout_param"),
    "opencv-faster-rcnn/faster_rcnn_vgg16.prototxt": ("proposal", "proposal_param"),
}


def _unknown_text(model) -> list:
    return [(layer.name, where, text) for layer in model.layers
            for where, text in _texts(layer.spec, "")]


def _texts(message, where):
    for text in message.unknown_text:
        yield where, text
    for name in message.present_fields():
        value = getattr(message, name)
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "unknown_text"):
                yield from _texts(item, f"{where}.{name}")


@pytest.mark.parametrize("name", sorted(REAL_TEXT))
def test_official_nets_with_fork_fields_open_and_write_back(name, tmp_path):
    layer_name, field, count = REAL_TEXT[name]
    source = REAL / name
    model = blobcast.load(source)
    kept = _unknown_text(model)
    assert len(kept) == count
    assert (layer_name, field) in {(layer, field_name(text)) for layer, _, text in kept}
    result = runner.invoke(app, ["inspect", "--json", str(source)])
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)["unknown_fields"]
    assert len(shown) == count and all("name" in entry and "text" in entry for entry in shown)
    out = tmp_path / "again.prototxt"
    blobcast.save(model, out)
    again = blobcast.load(out)
    assert _unknown_text(again) == kept
    assert [layer.spec for layer in again.layers] == [layer.spec for layer in model.layers]
    with pytest.warns(BlobcastWarning, match=f"known only by name; {count} left out .*{field}"):
        blobcast.save(model, tmp_path / "net.caffemodel")


@pytest.mark.parametrize("name", sorted(REAL_FORK_SETTINGS))
def test_official_nets_fork_settings_parse_as_typed_settings_and_write_back(name, tmp_path):
    layer_name, field = REAL_FORK_SETTINGS[name]
    model = blobcast.load(REAL / name)
    assert model[layer_name].spec.has(field) and model[layer_name].spec.unknown_text == ()
    out = tmp_path / "again.prototxt"
    blobcast.save(model, out)
    again = blobcast.load(out)
    assert [layer.spec for layer in again.layers] == [layer.spec for layer in model.layers]


def test_dropout_scale_train_stays_inside_dropout_param():
    model = blobcast.load(REAL / "py-faster-rcnn" / "ZF_fast_rcnn_test.prototxt")
    dropout = model["drop6"].spec.dropout_param
    assert dropout.dropout_ratio == 0.5 and dropout.scale_train is False
    assert dropout.unknown_text == () and model["drop6"].spec.unknown_text == ()


NESTED = """# fields a fork adds, at every depth
name: "n"
fork_net_setting: 3
layer {
  name: "a" type: "Mystery" top: "a"
  mystery_param {
    mode: FAST             # an enum value, as an identifier
    label: "x" 'y'
    sizes: [1, 2, 3]
    inner < depth: -inf >
    inner { depth: 2 more { deeper: "yes" } }
  }
  convolution_param { num_output: 4 fork_engine: CUDNN_FORK }
  include { phase: TEST fork_stage: [ "a", "b" ] }
}
layer { name: "b" type: "ReLU" bottom: "a" top: "b" extra: 1.5e-3; }
"""


def test_unknown_text_fields_at_any_depth_are_kept_in_their_message(tmp_path):
    path = tmp_path / "nested.prototxt"
    path.write_text(NESTED)
    model = blobcast.load(path)
    assert model.net.unknown_text == ("fork_net_setting: 3",)
    a = model["a"].spec
    assert len(a.unknown_text) == 1 and a.unknown_text[0].startswith("mystery_param {")
    assert "deeper: \"yes\"" in a.unknown_text[0] and "inner < depth: -inf >" in a.unknown_text[0]
    assert a.convolution_param.num_output == 4
    assert a.convolution_param.unknown_text == ("fork_engine: CUDNN_FORK",)
    assert a.include[0].unknown_text == ('fork_stage: [ "a", "b" ]',)
    assert model["b"].spec.unknown_text == ("extra: 1.5e-3",)
    out = tmp_path / "again.prototxt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blobcast.save(model, out)
    again = blobcast.load(out)
    assert again.net.unknown_text == model.net.unknown_text
    assert [layer.spec for layer in again.layers] == [layer.spec for layer in model.layers]


@pytest.mark.slow
def test_run_refuses_only_a_layer_whose_settings_hold_unknown_fields(tmp_path):
    # A fork's Dropout setting the schema does not know may change what it computes.
    net = tmp_path / "dropout.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 } } }\n'
                   'layer { name: "drop6" type: "Dropout" bottom: "x" top: "y"\n'
                   '  dropout_param { dropout_ratio: 0.5 fork_scale_mode: 2 } }\n')
    result = runner.invoke(app, ["run", str(net)])
    assert result.exit_code == 2
    assert "'drop6' (Dropout)" in result.stderr and "dropout_param.fork_scale_mode" in result.stderr
    # CaffeOnSpark's data layer fields (source_class, memory_data_param.source) are not read
    # by any computation: the net runs.
    result = runner.invoke(app, ["run", str(COS), "--prototxt",
                                 str(REAL / "caffeonspark" / "lenet_memory_train_test.prototxt")])
    assert result.exit_code == 0, result.stderr
    assert "ip2 [100, 10]" in result.stdout


def test_export_names_the_layer_and_the_unknown_field(tmp_path):
    net = tmp_path / "dropout.prototxt"
    net.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 } } }\n'
                   'layer { name: "drop" type: "Dropout" bottom: "x" top: "y"\n'
                   '  dropout_param { dropout_ratio: 0.5 fork_scale_mode: 2 } }\n')
    result = runner.invoke(app, ["convert", str(net), str(tmp_path / "dropout.onnx")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert "layer 'drop' (Dropout): its computation may depend on settings blobcast does not know: " \
           "dropout_param.fork_scale_mode" in lines[0]


def test_a_solver_keeps_its_unknown_fields_and_its_inline_nets_fork_settings(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('base_lr: 0.01\nfork_solver_option: 3\nnet_param {\n  name: "x"\n'
                      '  layer { name: "in" type: "Input" top: "x"\n'
                      '          input_param { shape { dim: 1 dim: 4 dim: 2 dim: 2 } } }\n'
                      '  layer { name: "p" type: "Permute" bottom: "x" top: "y"\n'
                      '          permute_param { order: 0 order: 2 order: 3 order: 1 } }\n}\n')
    settings = read_solver(str(solver))
    assert settings.unknown_text == ("fork_solver_option: 3",) and settings.to_dict()["base_lr"] == 0.01
    net, _ = net_of_solver(settings, str(solver))
    assert list(net["p"].spec.permute_param.order) == [0, 2, 3, 1]


def test_a_deeply_nested_unknown_block_is_kept_without_recursion(tmp_path):
    depth = 50_000  # far past Python's recursion limit
    path = tmp_path / "deep.prototxt"
    path.write_text('name: "deep"\nfork_block ' + "{ a " * depth + "}" * depth + "\n")
    model = blobcast.load(path)
    assert len(model.net.unknown_text) == 1 and model.net.unknown_text[0].count("{") == depth
    unbalanced = tmp_path / "unbalanced.prototxt"
    unbalanced.write_text('name: "x"\nfork_block { a { b: 1 }\n')
    with pytest.raises(blobcast.FormatError, match="syntax error at line 2, column 24: the text "
                                                   "ends inside a field's value"):
        blobcast.load(unbalanced)


def test_onnx_export_names_the_unknown_fields_it_cannot_hold(tmp_path):
    model = blobcast.load(COS, prototxt=REAL / "caffeonspark" / "lenet_memory_train_test.prototxt")
    with pytest.warns(BlobcastWarning, match=r"6 left out \(layer 'data' source_class, layer 'data' "
                                             r"memory_data_param.source, "):
        blobcast.save(model, tmp_path / "lenet.onnx")


def test_a_v1_layers_unknown_fields_through_the_upgrade(tmp_path):
    # A V1 layer's text fields have names: they go with it into the V2 layer.
    text = (CAFFE / "v1" / "lenet_v1.prototxt").read_text()
    source = tmp_path / "v1_fork.prototxt"
    source.write_text(text.replace('name: "conv1"', 'name: "conv1"\n  fork_v1_field: 7', 1))
    assert blobcast.load(source)["conv1"].spec.unknown_text == ("fork_v1_field: 7",)
    # Its binary ones are numbered for V1: Caffe's upgrade drops them, and a note says so.
    net = pb.NetParameter.FromString((CAFFE / "v1" / "lenet_v1.caffemodel").read_bytes())
    net.layers[0].MergeFromString(encode_tag(999, 0) + encode_varint(5))
    binary = tmp_path / "v1_fork.caffemodel"
    binary.write_bytes(net.SerializeToString())
    model = blobcast.load(binary)
    assert f"V1 layer {net.layers[0].name!r}: 3 bytes of fields unknown to V1 were dropped " \
           "by the upgrade, as Caffe's does" in model.notes


CEIL_MODE_NET = """name: "p"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 8 input_dim: 8
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: %s } }
"""


@pytest.mark.parametrize("ceil, size", [("false", 3), ("true", 4)])
def test_opencvs_ceil_mode_spelling_pools_as_opencv_pools(ceil, size, tmp_path):
    # shicai's DenseNet and MobileNet nets write `ceil_mode: false` (OpenCV's caffe.proto, number 13)
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "pool.prototxt"
    path.write_text(CEIL_MODE_NET % ceil)
    model = blobcast.load(path)
    assert model["pool"].spec.pooling_param.ceil_mode is (ceil == "true")
    x = np.random.default_rng(3).standard_normal((1, 2, 8, 8)).astype(np.float32)
    ours = np.asarray(Net(model).forward({"data": x})["pool"])
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setInput(x)
    theirs = net.forward()
    assert ours.shape == theirs.shape == (1, 2, size, size)
    np.testing.assert_array_equal(ours, theirs)
    out = tmp_path / "again.prototxt"
    blobcast.save(model, out)
    assert f"ceil_mode: {ceil}" in out.read_text()


@pytest.mark.parametrize("target", ["caffe", "caffe-1.0"])
def test_ceil_mode_is_written_as_what_each_target_reads(target, tmp_path):
    path = tmp_path / "pool.prototxt"
    path.write_text(CEIL_MODE_NET % "false")
    out = tmp_path / "pool_out.prototxt"
    result = runner.invoke(app, ["convert", str(path), str(out), "--target", target])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "ceil_mode" not in text
    assert ("round_mode: FLOOR" in text) == (target == "caffe")  # caffe-1.0: CEIL pooling and a Slice
    x = np.random.default_rng(4).standard_normal((1, 2, 8, 8)).astype(np.float32)
    expected = Net(blobcast.load(path)).forward({"data": x})["pool"]
    got = Net(blobcast.load(out)).forward({"data": x})
    np.testing.assert_array_equal(got["pool"], expected)
