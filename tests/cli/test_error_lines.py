"""Inputs that once ended in "unexpected <Error>": each now ends in one line
that names the file and says what is wrong with it."""

import numpy as np
import pytest
from typer.testing import CliRunner

from blobcast.cli import app

from ..conftest import GENERATED

runner = CliRunner()
SHAPE = (1, 1, 12, 12)  # lenet's input
ODD_ARRAYS = {
    "complex": (np.zeros(SHAPE, np.complex64), "complex"),
    "float128": (np.zeros(SHAPE, np.longdouble), "128-bit float"),
    "structured": (np.zeros(SHAPE, [("a", "<f4"), ("b", "<f4")]), "structured"),
    "datetime": (np.zeros(SHAPE, "datetime64[s]"), "datetime"),
    "timedelta": (np.zeros(SHAPE, "timedelta64[s]"), "timedelta"),
    "text": (np.full(SHAPE, "1.0"), "text"),
}


def _one_line(result, path) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert str(path) in lines[0] and "unexpected" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", sorted(ODD_ARRAYS))
@pytest.mark.parametrize("command", ["run", "verify"])
def test_an_input_array_of_another_kind_than_numbers_is_refused(tmp_path, kind, command):
    array, words = ODD_ARRAYS[kind]
    if array.dtype.itemsize == 8 and kind == "float128":
        pytest.skip("this platform's long double is 64 bits")
    path = tmp_path / f"{kind}.npy"
    np.save(path, array)
    model = GENERATED / "lenet.caffemodel"
    arguments = ["run", model] if command == "run" else ["verify", model, model]
    result = runner.invoke(app, [*map(str, arguments), "--input", f"data={path}"])
    assert f"holds {words} values" in _one_line(result, path)


@pytest.mark.parametrize("kind", ["complex", "structured", "datetime"])
def test_recorded_blobs_of_another_kind_than_numbers_are_refused(tmp_path, kind):
    model = GENERATED / "lenet.caffemodel"
    recorded = tmp_path / "recorded.npz"
    assert runner.invoke(app, ["run", str(model), "--save", str(recorded)]).exit_code == 0
    with np.load(recorded) as archive:
        blobs = {name: archive[name] for name in archive.files}
    blobs["prob"] = np.zeros(blobs["prob"].shape, ODD_ARRAYS[kind][0].dtype)
    np.savez(recorded, **blobs)
    result = runner.invoke(app, ["verify", str(model), str(recorded)])
    assert f"prob.npy: holds {ODD_ARRAYS[kind][1]} values" in _one_line(result, recorded)


@pytest.mark.parametrize("listed", [["data"], "data"])
def test_recorded_blobs_that_lack_a_listed_input_are_refused(tmp_path, listed):
    recorded = tmp_path / "recorded.npz"
    np.savez(recorded, prob=np.zeros((1, 10), np.float32), __blobcast_inputs__=np.array(listed))
    result = runner.invoke(app, ["verify", str(GENERATED / "lenet.caffemodel"), str(recorded)])
    assert "lists the input(s) 'data', but the file holds no array" in _one_line(result, recorded)


NET_INPUT = ('layer { name: "data" type: "Input" top: "data" '
             'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n')
BAD_SETTINGS = {
    "pooling_stride_0": ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
                         'pooling_param { kernel_size: 3 stride: 0 } }',
                         "kernel [3, 3] and stride [0, 0] must be positive"),
    "prior_box_ratio_0": ('layer { name: "p" type: "PriorBox" bottom: "data" bottom: "data" top: "p" '
                          'prior_box_param { min_size: 4 aspect_ratio: 0 } }',
                          "every min_size and aspect_ratio must be positive"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
@pytest.mark.parametrize("command", ["run", "onnx", "h5"])
def test_layer_settings_that_divide_by_zero_are_named(tmp_path, case, command):
    text, expected = BAD_SETTINGS[case]
    net = tmp_path / f"{case}.prototxt"
    net.write_text(NET_INPUT + text)
    arguments = {"run": ["run", net], "onnx": ["convert", net, tmp_path / "out.onnx"],
                 "h5": ["convert", net, tmp_path / "out.caffemodel.h5"]}[command]
    result = runner.invoke(app, [str(a) for a in arguments])
    if command == "h5":  # a net definition alone: written, its forward check skipped, said why
        assert result.exit_code == 0 and "forward check skipped: layer 'p'" in result.stderr
        assert expected in result.stderr
        return
    assert expected in _one_line(result, net)


def _lenet_with(tmp_path, name, edit):
    from blobcast.converters import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString((GENERATED / "lenet.caffemodel").read_bytes())
    edit(next(layer for layer in net.layer if layer.name == "conv1"))
    path = tmp_path / name
    path.write_bytes(net.SerializeToString())
    return path


def test_an_unnamed_layer_is_refused_for_hdf5_naming_it(tmp_path):
    source = _lenet_with(tmp_path, "unnamed.caffemodel", lambda layer: setattr(layer, "name", ""))
    destination = tmp_path / "out.caffemodel.h5"
    result = runner.invoke(app, ["convert", str(source), str(destination)])
    assert "layer(s) #1 have no name" in _one_line(result, destination)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unnamed.caffemodel"]


def test_a_layer_without_a_type_before_every_output_is_named_on_export(tmp_path):
    source = _lenet_with(tmp_path, "typeless.caffemodel", lambda layer: setattr(layer, "type", ""))
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "out.onnx")])
    line = _one_line(result, source)
    # the typeless layer's input comes from a data layer that cannot run: named, not a KeyError
    assert "'conv1'" in line and "unexpected" not in line


@pytest.mark.parametrize("error", [KeyError("data"), TypeError("bad operand"), RecursionError(),
                                   ValueError("no"), OSError(5, "Input/output error")])
def test_a_failure_nothing_anticipated_still_names_the_file(tmp_path, monkeypatch, error):
    from blobcast import inspection

    def broken(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(inspection, "model_facts", broken)
    model = GENERATED / "lenet.caffemodel"
    result = runner.invoke(app, ["inspect", str(model)])
    line = result.stderr.strip()
    assert result.exit_code == 2 and len(line.splitlines()) == 1
    assert line.startswith(f"blobcast: error: {model}: unexpected {type(error).__name__}")
    assert line.endswith("(run with --debug for the traceback)")
