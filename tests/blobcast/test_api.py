"""The Python API: typed settings, net surgery, saving."""

import numpy as np
import pytest

import blobcast
from blobcast import Message

from ..conftest import CAFFE, GENERATED


def test_settings_are_typed_with_caffes_defaults():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel")
    pool = model["pool_max"].type_params if "pool_max" in model else None
    conv = model["conv_g"].type_params
    assert conv.num_output == 8 and conv.group == 2
    assert conv.bias_term is True          # default, not in the file
    assert conv.has("group") and not conv.has("bias_term")
    assert conv.engine == "DEFAULT"
    with pytest.raises(TypeError):
        conv.num_output = "eight"
    with pytest.raises(ValueError, match="not one of"):
        Message("PoolingParameter", pool="MEDIAN")
    assert pool is None or pool.pool in ("MAX", "AVE")


def test_net_surgery_edit_rename_remove_and_save(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    weights = model["ip2"].blobs[0].data.numpy() * 2
    model["ip2"].blobs[0] = blobcast.Blob(weights)
    model.rename_layer("ip2", "classifier")
    model["classifier"].tops[0] = "scores"
    model["prob"].bottoms[0] = "scores"
    model.remove_layer("relu1")
    out = tmp_path / "edited.caffemodel"
    blobcast.save(model, out)
    again = blobcast.load(out)
    assert "relu1" not in again and "classifier" in again
    np.testing.assert_array_equal(again["classifier"].blobs[0].data.numpy(), weights)
    with pytest.raises(ValueError, match="already exists"):
        again.rename_layer("ip1", "classifier")


def test_building_a_model_from_scratch(tmp_path):
    model = blobcast.Model()
    model.name = "tiny"
    model.layers.append(blobcast.Layer("data", "Input", tops=["data"],
                                       input_param={"shape": [{"dim": [1, 3]}]}))
    fc = blobcast.Layer("fc", "InnerProduct", bottoms=["data"], tops=["fc"],
                        blobs=[np.eye(2, 3, dtype=np.float32), np.zeros(2, np.float32)])
    fc.type_params.num_output = 2
    model.layers.append(fc)
    out = tmp_path / "tiny.caffemodel.h5"
    report = blobcast.convert(_save(model, tmp_path / "tiny.caffemodel"), out)
    assert report.check == "bit-exact"
    assert blobcast.load(out)["fc"].type_params.num_output == 2
    assert blobcast.load(out).inputs() == {"data": [1, 3]}


def _save(model, path):
    blobcast.save(model, path)
    return path


def test_inputs_are_never_modified(caffe_dir):
    before = {p: p.read_bytes() for p in caffe_dir.rglob("*") if p.is_file()}
    for path in [caffe_dir / "zoo" / "zoo.caffemodel", caffe_dir / "zoo" / "zoo.caffemodel.h5",
                 caffe_dir / "lenet" / "snapshots" / "adam_bp_iter_5.solverstate"]:
        suffix = {".solverstate": ".solverstate.h5", ".caffemodel": ".caffemodel",
                  ".h5": ".copy.caffemodel.h5"}[path.suffix]
        blobcast.convert(path, caffe_dir / ("converted" + suffix), overwrite=True)
    after = {p: p.read_bytes() for p in before}
    assert before == after


def test_binaryproto_and_npy_convert_both_ways(tmp_path):
    mean = np.random.RandomState(0).rand(1, 3, 4, 4).astype(np.float32)
    npy = tmp_path / "mean.npy"
    np.save(npy, mean)
    proto = tmp_path / "mean.binaryproto"
    assert blobcast.convert(npy, proto).check == "bit-exact"
    from blobcast.converters import caffe_pb2 as pb

    message = pb.BlobProto.FromString(proto.read_bytes())
    assert list(message.shape.dim) == [1, 3, 4, 4]
    np.testing.assert_array_equal(np.array(message.data, np.float32).reshape(mean.shape), mean)
    back = tmp_path / "back.npy"
    blobcast.convert(proto, back)
    np.testing.assert_array_equal(np.load(back), mean)


def test_solver_state_cannot_become_a_model(tmp_path):
    with pytest.raises(blobcast.FormatError, match="solver state cannot be written"):
        blobcast.convert(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.solverstate",
                         tmp_path / "x.caffemodel")
    assert list(tmp_path.iterdir()) == []


def test_errors_name_the_destination_not_a_temporary_file(tmp_path):
    destination = tmp_path / "weights.caffemodel"
    with pytest.raises(blobcast.FormatError) as caught:  # the writer refuses, naming its file
        blobcast.convert(CAFFE / "shared" / "snapshots" / "shared_h5_iter_4.caffemodel.h5", destination)
    assert caught.value.path == str(destination)
    assert "under the owner of a shared parameter; give --prototxt" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".caffemodel.h5", ".caffemodel", ".onnx"])
def test_progress_advances_through_the_weights(tmp_path, suffix):
    events = []

    class Recorder:
        def __init__(self, total, label):
            events.append(("start", total, label))

        def advance(self, amount):
            events.append(("advance", amount))

        def close(self):
            events.append(("close",))

    blobcast.convert(CAFFE / "zoo" / "zoo.caffemodel", tmp_path / ("zoo" + suffix), progress_factory=Recorder)
    assert events[0][0] == "start" and events[0][1] == blobcast.load(CAFFE / "zoo" / "zoo.caffemodel").nbytes
    assert events[-1] == ("close",)
    assert sum(e[1] for e in events if e[0] == "advance") >= events[0][1]
