"""Caffe's HDF5 snapshot layout: read Caffe's files, write files like Caffe's."""

import h5py
import numpy as np
import pytest

import blobcast
from blobcast.converters.hdf5_container import listing as hdf5_listing

from ..conftest import CAFFE, GENERATED, SOLVER_TYPES, views_a_file_mapping

PAIRS = [(f"lenet/snapshots/{t}_bp_iter_5.caffemodel", f"lenet/snapshots/{t}_h5_iter_5.caffemodel.h5")
         for t in SOLVER_TYPES]
PAIRS += [("lenet/snapshots/sgd_diff_bp_iter_3.caffemodel",
           "lenet/snapshots/sgd_diff_h5_iter_3.caffemodel.h5"),
          ("shared/snapshots/shared_bp_iter_4.caffemodel",
           "shared/snapshots/shared_h5_iter_4.caffemodel.h5"),
          ("slash/snapshots/slash_nested_bp_iter_2.caffemodel",
           "slash/snapshots/slash_nested_h5_iter_2.caffemodel.h5"),
          ("zoo/zoo.caffemodel", "zoo/zoo.caffemodel.h5")]


def _tensors(model):
    return {(layer.name, j): blob for layer in model for j, blob in enumerate(layer.blobs)
            if blob is not None}


@pytest.mark.parametrize("binary,hdf5", PAIRS, ids=lambda p: p.split("/")[-1])
def test_caffe_binary_and_hdf5_snapshots_hold_identical_tensors(binary, hdf5):
    from_binary = blobcast.load(CAFFE / binary)
    from_hdf5 = blobcast.load(CAFFE / hdf5)
    theirs = _tensors(from_hdf5)
    ours = {key: blob for key, blob in _tensors(from_binary).items()
            if from_binary.shared_with(from_binary[key[0]], key[1]) is None}
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key].data.numpy(), theirs[key].data.numpy())
        assert (ours[key].diff is None) == (theirs[key].diff is None)
        if ours[key].diff is not None:
            np.testing.assert_array_equal(ours[key].diff.numpy(), theirs[key].diff.numpy())


def _layout(path):
    return sorted((e["path"], e["kind"], tuple(e.get("shape", ())), e.get("dtype"))
                  for e in hdf5_listing(path) if not e["path"].startswith("/architecture"))


@pytest.mark.filterwarnings("ignore:.*nested HDF5 groups")
@pytest.mark.parametrize("binary,hdf5", PAIRS, ids=lambda p: p.split("/")[-1])
def test_our_hdf5_matches_caffes_dataset_for_dataset(binary, hdf5, tmp_path):
    out = tmp_path / "ours.caffemodel.h5"
    blobcast.convert(CAFFE / binary, out)
    assert _layout(out) == _layout(CAFFE / hdf5)
    with h5py.File(out) as ours, h5py.File(CAFFE / hdf5) as theirs:
        for path, kind, _shape, _dtype in _layout(out):
            if kind == "dataset":
                np.testing.assert_array_equal(ours[path][()], theirs[path][()])
                assert ours[path].chunks is None and ours[path].compression is None


def test_shared_weight_stored_once_under_its_owner(tmp_path):
    out = tmp_path / "shared.caffemodel.h5"
    blobcast.convert(CAFFE / "shared" / "snapshots" / "shared_bp_iter_4.caffemodel", out)
    with h5py.File(out) as handle:
        assert sorted(handle["data/ip_a"]) == ["0", "1"]
        assert sorted(handle["data/ip_b"]) == ["1"]
    model = blobcast.load(out)
    assert model["ip_b"].blobs[0] is model["ip_a"].blobs[0]


def test_caffe_hdf5_with_prototxt_links_shared_weights():
    model = blobcast.load(CAFFE / "shared" / "snapshots" / "shared_h5_iter_4.caffemodel.h5",
                          prototxt=CAFFE / "shared" / "shared_deploy.prototxt")
    assert model["ip_b"].blobs[0] is model["ip_a"].blobs[0]
    assert len(model["ip_b"].blobs) == 2


def test_caffe_hdf5_without_architecture_lists_names_and_values():
    model = blobcast.load(CAFFE / "shared" / "snapshots" / "shared_h5_iter_4.caffemodel.h5")
    assert not model.has_architecture
    assert model["ip_b"].blobs[0] is None  # stored under its owner, which the file cannot name
    assert model["ip_b"].blobs[1].shape == (6,)


@pytest.mark.parametrize("name", ["zoo.caffemodel", "slash.caffemodel", "lenet.caffemodel"])
def test_blobcast_hdf5_is_self_contained_and_round_trips(name, tmp_path):
    source = (CAFFE / "zoo" / name) if name.startswith("zoo") else GENERATED / name
    h5 = tmp_path / "model.caffemodel.h5"
    if name.startswith("slash"):
        with pytest.warns(blobcast.BlobcastWarning, match="nested HDF5 groups"):
            blobcast.convert(source, h5)
    else:
        blobcast.convert(source, h5)  # any blobcast warning fails the test
    back = tmp_path / "back.caffemodel"
    blobcast.convert(h5, back)  # no --prototxt needed: the architecture is inside
    assert back.read_bytes() == source.read_bytes()


def test_slash_names_nest_with_a_warning_and_read_back_exactly(tmp_path):
    out = tmp_path / "slash.caffemodel.h5"
    with pytest.warns(blobcast.BlobcastWarning, match="conv1/3x3.*use .caffemodel"):
        blobcast.save(blobcast.load(GENERATED / "slash.caffemodel"), out)
    with h5py.File(out) as handle:
        assert isinstance(handle["data/conv1"], h5py.Group)
        assert handle["data/conv1/3x3/0"].shape == (4, 3, 3, 3)
    original, back = blobcast.load(GENERATED / "slash.caffemodel"), blobcast.load(out)
    for key, blob in _tensors(original).items():
        np.testing.assert_array_equal(blob.data.numpy(), _tensors(back)[key].data.numpy())


def test_caffes_nested_slash_file_converts_to_a_caffemodel_that_caffe_loaders_accept(tmp_path):
    cv2 = pytest.importorskip("cv2")
    folder = CAFFE / "slash"
    out = tmp_path / "fixed.caffemodel"
    blobcast.convert(folder / "snapshots" / "slash_nested_h5_iter_2.caffemodel.h5", out,
                     prototxt=folder / "slash_nested_train.prototxt")
    reference = blobcast.load(folder / "snapshots" / "slash_nested_bp_iter_2.caffemodel")
    for key, blob in _tensors(reference).items():
        np.testing.assert_array_equal(blob.data.numpy(), _tensors(blobcast.load(out))[key].data.numpy())
    recorded = np.load(folder / "slash_nested_bp_forward.npz")
    net = cv2.dnn.readNetFromCaffe(str(folder / "slash_nested_deploy.prototxt"), str(out))
    net.setInput(recorded["input"])
    outputs = net.forward(["cls", "prob", "inc/output"])
    for name, value in zip(["cls", "prob", "inc/output"], outputs):
        np.testing.assert_allclose(value, recorded[name], atol=1e-5, rtol=1e-5)


def test_gzip_compression_keeps_values_and_layout(tmp_path):
    out = tmp_path / "zoo.caffemodel.h5"
    blobcast.convert(CAFFE / "zoo" / "zoo.caffemodel", out, compress="gzip")
    with h5py.File(out) as handle:
        assert handle["data/ip/0"].compression == "gzip"
    assert _layout(out) == _layout(CAFFE / "zoo" / "zoo.caffemodel.h5")


def test_duplicate_layer_names_are_a_clear_error(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    model["ip2"].name = "ip1"
    with pytest.raises(blobcast.FormatError, match="duplicate layer names.*ip1"):
        blobcast.save(model, tmp_path / "dup.caffemodel.h5")


def test_truncated_caffe_hdf5_is_a_clear_error():
    with pytest.raises(blobcast.FormatError, match="not a readable HDF5 file"):
        blobcast.load(CAFFE / "slash" / "snapshots" / "slash_h5_iter_2.caffemodel.h5")


def test_hdf5_that_is_not_a_caffe_snapshot_says_what_it_found(tmp_path):
    keras = tmp_path / "keras.h5"
    with h5py.File(keras, "w") as handle:
        handle.attrs["keras_version"] = "2.4.0"
        handle.create_group("model_weights").create_dataset("w", data=np.zeros(3))
    expected = r"no /data group; top level has \[model_weights\] \(it looks like a Keras model\)"
    with pytest.raises(blobcast.FormatError, match=expected):
        blobcast.load(keras)
    with pytest.raises(blobcast.FormatError, match="solver state, not a model"):
        blobcast.load(CAFFE / "lenet" / "snapshots" / "adam_h5_iter_5.solverstate.h5",
                      format="caffemodel-h5")


def test_hdf5_tensors_map_the_file_without_copying():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel.h5")
    array = model["ip"].blobs[0].data.numpy()
    assert views_a_file_mapping(array)  # a view of the file's one mapping, no copy


def test_an_inconsistent_model_converts_both_ways(tmp_path):
    # Definitions that do not fit the weights are the file's business: what
    # reads as .caffemodel must read back from the .h5 written from it.
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    model["ip1"].type_params.num_output = 99
    source = tmp_path / "odd.caffemodel"
    blobcast.save(model, source)
    h5 = tmp_path / "odd.caffemodel.h5"
    blobcast.convert(source, h5)
    back = tmp_path / "back.caffemodel"
    blobcast.convert(h5, back)
    assert back.read_bytes() == source.read_bytes()


@pytest.mark.filterwarnings("ignore:.*nested HDF5 groups")
@pytest.mark.parametrize("name", ["slash_bp_iter_2.caffemodel", "slash_nested_bp_iter_2.caffemodel"])
def test_caffes_slash_named_models_convert_both_ways_exactly(name, tmp_path):
    source = CAFFE / "slash" / "snapshots" / name
    h5 = tmp_path / "slash.caffemodel.h5"
    blobcast.convert(source, h5)
    back = tmp_path / "back.caffemodel"
    blobcast.convert(h5, back)
    assert back.read_bytes() == source.read_bytes()
    original, via_h5 = _tensors(blobcast.load(source)), _tensors(blobcast.load(h5))
    assert original.keys() == via_h5.keys()
    for key in original:
        assert original[key].data.numpy().tobytes() == via_h5[key].data.numpy().tobytes()
