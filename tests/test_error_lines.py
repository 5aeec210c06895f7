"""Inputs that once ended in "unexpected <Error>": each now ends in one line
that names the file and says what is wrong with it."""

import numpy as np
import pytest
from typer.testing import CliRunner

from blobcast.cli import app

from .conftest import GENERATED

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
