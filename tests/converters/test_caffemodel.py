"""Binary .caffemodel: real Caffe files read, upgraded and written back exactly."""

import mmap
import warnings

import numpy as np
import pytest

import blobcast
from blobcast.converters import caffe_pb2 as pb
from blobcast.converters import caffemodel

from ..conftest import CAFFE, GENERATED

V2_FILES = [p for p in sorted(CAFFE.rglob("*.caffemodel")) if "lenet_v0." not in p.name
            and "lenet_v1." not in p.name]


@pytest.mark.parametrize("path", V2_FILES, ids=lambda p: p.name)
def test_caffe_files_round_trip_byte_for_byte(path, tmp_path):
    model = blobcast.load(path)
    out = tmp_path / "out.caffemodel"
    blobcast.save(model, out)
    assert out.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_legacy_nets_upgrade_exactly_as_caffe_does(version, tmp_path):
    model = blobcast.load(CAFFE / "v1" / f"lenet_{version}.caffemodel")
    assert model.source_version == version.upper()
    out = tmp_path / "upgraded.caffemodel"
    blobcast.save(model, out)
    # Caffe's own upgrade_net_proto_binary output, byte for byte.
    assert out.read_bytes() == (CAFFE / "v1" / f"lenet_{version}_upgraded.caffemodel").read_bytes()


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_legacy_prototxt_upgrade_matches_caffe(version):
    ours = blobcast.load(CAFFE / "v1" / f"lenet_{version}.prototxt")
    caffes = blobcast.load(CAFFE / "v1" / f"lenet_{version}_upgraded.prototxt")
    assert [layer.spec.to_dict() for layer in ours] == [layer.spec.to_dict() for layer in caffes]
    assert ours.net.to_dict() == caffes.net.to_dict()


def test_legacy_4d_blob_shapes_take_the_layer_shape():
    model = blobcast.load(CAFFE / "v1" / "lenet_v1.caffemodel")
    assert model["ip1"].blobs[0].shape == (16, 100)
    assert model["ip1"].blobs[1].shape == (16,)
    assert model["conv1"].blobs[0].shape == (4, 1, 3, 3)
    modern = blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel")
    for layer in ("conv1", "ip1", "ip2"):
        for ours, theirs in zip(model[layer].blobs, modern[layer].blobs):
            np.testing.assert_array_equal(ours.data.numpy(), theirs.data.numpy())


def test_tensors_are_lazy_views_of_the_mapped_file():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel")
    blob = model["ip"].blobs[0]
    assert not blob.data.is_loaded  # reading the model read no weights
    array = blob.data.numpy()
    assert array.shape == (10, 648) and array.dtype == np.float32
    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    assert isinstance(base, mmap.mmap)  # no copy: the array views the file
    assert not array.flags.writeable


def test_shared_weights_are_one_object_owned_by_the_first_layer():
    model = blobcast.load(CAFFE / "shared" / "snapshots" / "shared_bp_iter_4.caffemodel")
    assert model["ip_b"].blobs[0] is model["ip_a"].blobs[0]
    assert model["ip_b"].blobs[1] is not model["ip_a"].blobs[1]
    assert [ref.key for ref in model.owned_params()] == ["ip_a/0", "ip_a/1", "ip_b/1"]
    assert model.shared_with(model["ip_b"], 0) is model["ip_a"]


def test_differing_copies_of_a_shared_blob_follow_caffe_last_wins(tmp_path):
    model = blobcast.load(GENERATED / "shared.caffemodel")
    raw = pb.NetParameter.FromString((GENERATED / "shared.caffemodel").read_bytes())
    ip_b = [layer for layer in raw.layer if layer.name == "ip_b"][0]
    ip_b.blobs[0].data[0] += 1.0
    path = tmp_path / "edited.caffemodel"
    path.write_bytes(raw.SerializeToString())
    with pytest.warns(blobcast.BlobcastWarning, match="differs between layers"):
        edited = blobcast.load(path)
    assert edited["ip_a"].blobs[0] is edited["ip_b"].blobs[0]
    assert edited["ip_a"].blobs[0].data.numpy().flat[0] == pytest.approx(
        model["ip_a"].blobs[0].data.numpy().flat[0] + 1.0)


def test_unknown_fields_survive_a_binary_round_trip(tmp_path):
    raw = bytearray((GENERATED / "lenet.caffemodel").read_bytes())
    net = pb.NetParameter.FromString(bytes(raw))
    # Field 999 in a layer (varint) and field 500 at net level (string): unknown to Caffe.
    conv = [layer for layer in net.layer if layer.name == "conv1"][0]
    conv.MergeFromString(b"\xb8\x3e\x2a")                 # field 999, varint 42
    net.MergeFromString(b"\xa2\x1f\x05hello")             # field 500, "hello"
    source = tmp_path / "unknown.caffemodel"
    source.write_bytes(net.SerializeToString())
    model = blobcast.load(source)
    assert model["conv1"].spec.unknown_fields == b"\xb8\x3e\x2a"
    out = tmp_path / "out.caffemodel"
    blobcast.save(model, out)
    assert out.read_bytes() == source.read_bytes()
    h5 = tmp_path / "via.caffemodel.h5"
    blobcast.convert(source, h5)
    back = tmp_path / "back.caffemodel"
    blobcast.convert(h5, back)
    assert back.read_bytes() == source.read_bytes()


def test_float64_blobs_round_trip(tmp_path):
    model = blobcast.load(GENERATED / "lenet_float64.caffemodel")
    assert model["ip1"].blobs[0].dtype == np.float64
    for suffix in (".caffemodel.h5", ".caffemodel"):
        out = tmp_path / ("out" + suffix)
        blobcast.convert(GENERATED / "lenet_float64.caffemodel", out)
    assert out.read_bytes() == (GENERATED / "lenet_float64.caffemodel").read_bytes()


def test_diffs_are_read_and_kept():
    model = blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_diff_bp_iter_3.caffemodel")
    blob = model["ip1"].blobs[0]
    assert blob.diff is not None and blob.diff.shape == blob.shape
    assert np.any(blob.diff.numpy() != 0)


def test_count_mismatch_is_a_clear_error(tmp_path):
    net = pb.NetParameter.FromString((GENERATED / "lenet.caffemodel").read_bytes())
    del net.layer[1].blobs[0].data[-1]
    path = tmp_path / "short.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(blobcast.FormatError, match=r"needs 36 data values, the file has 35"):
        blobcast.load(path)


def test_writing_over_2_gib_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(caffemodel, "PROTOBUF_LIMIT", 1000)
    with pytest.raises(blobcast.FormatError, match="over the 2 GiB.*caffemodel.h5"):
        blobcast.save(blobcast.load(GENERATED / "lenet.caffemodel"), tmp_path / "big.caffemodel")


def test_fixture_generator_is_deterministic(tmp_path):
    import runpy
    import sys

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = runpy.run_path(str(GENERATED.parent / "make_fixtures.py"), run_name="fixtures")
    module["main"](tmp_path)
    for path in sorted(GENERATED.iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert sys.modules  # the script ran in-process


def test_a_blob_with_a_dimension_of_zero_is_written(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    model["ip1"].blobs[1] = blobcast.Blob(np.zeros((0,), np.float32))  # Caffe allows a dim of 0
    path = tmp_path / "zero.caffemodel"
    blobcast.save(model, path)
    back = blobcast.load(path)
    assert back["ip1"].blobs[1].shape == (0,)
    blobcast.save(back, tmp_path / "again.caffemodel")
    assert (tmp_path / "again.caffemodel").read_bytes() == path.read_bytes()
    np.save(tmp_path / "empty.npy", np.zeros((3, 0, 2), np.float32))
    blobcast.convert(tmp_path / "empty.npy", tmp_path / "empty.binaryproto")
    assert blobcast.load(tmp_path / "empty.binaryproto").layers[0].blobs[0].shape == (3, 0, 2)
