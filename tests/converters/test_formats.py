"""Every registered format answers every hook of its record: derived from
the registry, so a new format is checked as soon as it is registered."""

import subprocess
import sys

import numpy as np
import pytest

import blobcast
from blobcast.converters import FORMATS, HOOKS, Companions, format_for_suffix
from blobcast.errors import FormatError
from blobcast.model import Blob, Layer, Model
from blobcast.solver import SolverState

from ..conftest import CAFFE, GENERATED


def _sample(fmt):
    """Something the format holds: a solver state, a lone blob, or a net with weights."""
    if fmt.holds_solver_state:
        return blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.solverstate")
    if not fmt.holds_architecture:
        blob = Blob(np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3))
        return Model(layers=[Layer(name="blob", blobs=[blob])], has_architecture=False)
    return blobcast.load(GENERATED / "lenet.caffemodel")


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_answers_every_hook(name, tmp_path):
    fmt = FORMATS[name]
    assert all(callable(getattr(fmt, hook, None)) for hook in HOOKS)
    for suffix in fmt.suffixes:
        assert fmt.match("model" + suffix.upper()) == len(suffix)
    path = str(tmp_path / ("sample" + fmt.suffixes[0]))
    assert format_for_suffix(path) is fmt  # its first suffix names it
    sample = _sample(fmt)
    fmt.write(sample, path)
    check, read_back = fmt.verify_written(sample, path, None)
    assert check and (read_back is None) == fmt.runs_by_itself
    assert isinstance(fmt.read(path), SolverState if fmt.holds_solver_state else Model)
    assert isinstance(fmt.inspect(path), dict)
    companions = fmt.companions(path)
    assert isinstance(companions, Companions)
    assert (companions.net_definition is not None) == fmt.deploy_pair
    runner = fmt.runner(path)
    assert (runner is not None) == fmt.runs_by_itself
    if runner is not None:
        assert set(runner.outputs) and callable(runner.forward)
    with pytest.raises(FormatError):  # none of the samples carries a training step
        fmt.training_step(path, {})


def test_a_file_of_another_format_is_refused_by_verify_written(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    path = str(tmp_path / "lenet.caffemodel")
    FORMATS["caffemodel"].write(model, path)
    model["conv1"].blobs[0] = Blob(model["conv1"].blobs[0].data.numpy() + 1)
    with pytest.raises(blobcast.CheckFailed, match="does not read back the same"):
        FORMATS["caffemodel"].verify_written(model, path, None)


def test_listing_the_formats_imports_no_onnx():
    probe = ("import sys, blobcast.converters as c; c.FORMATS['onnx'].match('m.onnx'); "
             "print('onnx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
