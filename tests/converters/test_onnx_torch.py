"""The torchvision families as torch.onnx exports them (fixtures/torch), to
Caffe for each target: OpenCV's output on the written net, and blobcast's
engine on it, within 1e-4 of the range of onnxruntime's output on the
original ONNX file."""

import warnings
from pathlib import Path

import numpy as np
import pytest

import blobcast
from blobcast.converters.onnx_versions import runtime_newest_opset
from blobcast.engine import Net
from blobcast.errors import BlobcastWarning

ort = pytest.importorskip("onnxruntime")

TORCH = Path(__file__).resolve().parents[2] / "fixtures" / "torch"
FILES = sorted(p.stem for p in TORCH.glob("*.onnx"))
FAMILIES = sorted({name.split("_legacy")[0].split("_dynamo")[0] for name in FILES})
RELATIVE = 1e-4  # of the reference output's range


def reference_input(seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 64, 64)).astype(np.float32)


def onnxruntime_output(path: Path, x: np.ndarray) -> np.ndarray:
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # an old runtime refuses a newer file's IR version
        if "Unsupported model IR version" not in str(error):
            raise
        pytest.skip(f"onnxruntime {ort.__version__}: {str(error).rsplit(': ', 1)[-1].strip()}")
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def relative_errors(name: str, target: str, folder: Path) -> dict:
    """Convert fixtures/torch/<name>.onnx for `target`; the largest
    difference from onnxruntime's output, over that output's range, of
    blobcast's engine and (where installed) OpenCV on the written net."""
    source = TORCH / f"{name}.onnx"
    opset = int(name.rsplit("_op", 1)[1])
    if opset > (runtime_newest_opset(ort.__version__) or opset):
        pytest.skip(f"onnxruntime {ort.__version__} predates opset {opset}")
    out = folder / f"{name}_{target}.caffemodel"
    x = reference_input()
    expected = onnxruntime_output(source, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BlobcastWarning)
        blobcast.convert(source, out, target=target, overwrite=True)
    spread = float(expected.max() - expected.min())
    model = blobcast.load(out)
    engine = np.asarray(Net(model).forward({"input": x})["logits"])
    errors = {"engine": float(np.abs(engine - expected).max()) / spread}
    try:
        import cv2  # noqa: F401
    except ImportError:
        return errors
    if target == "opencv":
        from blobcast.converters.opencv_check import run_in_opencv

        got = run_in_opencv(model, str(out), {"input": x}, ["logits"])["logits"]
        errors["opencv"] = float(np.abs(got - expected).max()) / spread
    return errors


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", ["opencv", "caffe"])
def test_each_family_from_the_legacy_exporter_runs_the_same_in_caffe_form(family, target, tmp_path):
    errors = relative_errors(f"{family}_legacy_op13", target, tmp_path)
    assert max(errors.values()) <= RELATIVE, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FILES if "_legacy_op13" not in n])
@pytest.mark.parametrize("target", ["opencv", "caffe"])
def test_every_export_runs_the_same_in_caffe_form(name, target, tmp_path):
    errors = relative_errors(name, target, tmp_path)
    assert max(errors.values()) <= RELATIVE, errors


def test_a_flatten_of_pooled_features_is_a_flatten_tidl_takes(tmp_path):
    """TIDL has Flatten but no Reshape: SqueezeNet's head fits it."""
    errors = relative_errors("squeezenet_legacy_op13", "tidl", tmp_path)
    assert errors["engine"] <= RELATIVE


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", ["caffe-1.0", "nnie", "rknn"])
def test_each_family_fits_the_npu_targets_and_runs_the_same(family, target, tmp_path):
    errors = relative_errors(f"{family}_dynamo_op23", target, tmp_path)
    assert errors["engine"] <= RELATIVE, errors
