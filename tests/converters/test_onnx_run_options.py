"""Every runner honours or refuses every run option: an .onnx file given an
option of blobcast's engine, or a device it cannot use, is refused."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app

from ..conftest import CAFFE

ort = pytest.importorskip("onnxruntime")
SNAPSHOT = CAFFE / "lenet" / "snapshots" / "adadelta_bp_iter_5.caffemodel"
DEPLOY = CAFFE / "lenet" / "lenet_deploy.prototxt"


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "lenet.onnx"
    blobcast.convert(SNAPSHOT, path, prototxt=DEPLOY)
    return path


def _run(*args):
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="this onnxruntime can run on a GPU")
def test_device_gpu_without_a_cuda_runtime_is_refused_like_the_engines(lenet_onnx):
    code, report = _run("run", lenet_onnx, "--device", "gpu")
    assert code == 2 and "--device gpu" in report["error"]
    code, report = _run("run", lenet_onnx, "--device", "auto")
    assert code == 0 and report["ok"]


@pytest.mark.parametrize("option", [["--no-winograd"], ["--random-weights"], ["--allow-python-layers"],
                                    ["--prototxt", DEPLOY], ["--precision", "f8"]])
def test_engine_options_are_refused_for_an_onnx_file(option, lenet_onnx):
    code, report = _run("run", lenet_onnx, *option)
    assert code == 2 and str(option[0]) in report["error"]
    if option[0] != "--random-weights":  # verify compares files as they are
        code, report = _run("verify", lenet_onnx, lenet_onnx, *option)
        assert code == 2 and str(option[0]) in report["error"]


def test_engine_options_beside_an_onnx_file_are_for_the_engine_side(lenet_onnx):
    code, report = _run("verify", lenet_onnx, SNAPSHOT, "--prototxt", DEPLOY, "--no-winograd")
    assert code == 0 and report["ok"], report


def test_all_blobs_is_honoured(lenet_onnx):
    code, outputs = _run("run", lenet_onnx)
    code_all, every = _run("run", lenet_onnx, "--all-blobs")
    assert code == code_all == 0
    assert len(every["blobs"]) > len(outputs["blobs"]) == 1


# A value that sets each option of runner_for on purpose.
_SET = {"device": "cpu", "prototxt": str(DEPLOY), "allow_python_layers": True, "python_path": ("x",),
        "random_weights": 0, "layer_plugins": ("plugin.py",), "winograd": False, "precision": "f8",
        "skip_unrunnable": True, "hold_weights": False}


@pytest.mark.parametrize("option", sorted(_SET))
def test_every_option_reaches_the_onnx_runner_honoured_or_refused_in_one_line(option, lenet_onnx):
    from blobcast.check import OPTION_FLAGS, runner_for
    from blobcast.converters.onnx_runner import OnnxRunner
    from blobcast.errors import BlobcastError

    assert set(_SET) == set(OPTION_FLAGS)  # a new option gets a case here
    flag = OPTION_FLAGS[option]
    if option in OnnxRunner.takes or flag is None:  # honoured (or, unflagged, how every ONNX run is)
        runner_for(str(lenet_onnx), **{option: _SET[option]})
        return
    with pytest.raises(BlobcastError) as refused:
        runner_for(str(lenet_onnx), **{option: _SET[option]})
    assert flag in str(refused.value) and "\n" not in str(refused.value)


def test_device_gpu_becomes_onnxruntimes_cuda_provider(lenet_onnx, monkeypatch):
    from blobcast.check import runner_for

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    runner = runner_for(str(lenet_onnx), device="gpu")
    assert runner.providers[0] == "CUDAExecutionProvider" and runner.device == "gpu"
    assert runner_for(str(lenet_onnx), device="cpu").providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("option", [["--no-winograd"], ["--device", "nowhere"]])
def test_verify_and_run_of_an_onnx_file_refuse_in_one_line(option, lenet_onnx):
    for command in (["run", lenet_onnx], ["verify", lenet_onnx, lenet_onnx]):
        code, report = _run(*command, *option)
        assert code == 2 and option[-1] in report["error"] and "\n" not in report["error"]


def test_precision_runs_the_engine_in_float64(tmp_path):
    saved = {}
    for precision in (None, "f8"):
        path = tmp_path / f"{precision}.npz"
        given = ["--precision", precision] if precision else []
        code, report = _run("run", SNAPSHOT, "--prototxt", DEPLOY, "--save", path, *given)
        assert code == 0 and report["ok"]
        with np.load(path) as archive:
            saved[precision] = archive["prob"]
    assert saved[None].dtype == np.float32 and saved["f8"].dtype == np.float64
    np.testing.assert_allclose(saved["f8"], saved[None], rtol=1e-5)
    assert not np.array_equal(saved["f8"], saved[None].astype(np.float64))  # computed apart
