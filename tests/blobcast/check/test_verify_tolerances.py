"""verify's comparison: each blob judged relative to its own range, per-blob
tolerances, blobs too small to judge, and the float64 check of a failure."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.check import RunOptions, parse_tolerance, verify_files
from blobcast.check.compare import FLOAT32_TINY, compare_arrays
from blobcast.cli import app
from blobcast.errors import BlobcastError

from ...conftest import GENERATED, ROOT

runner = CliRunner()
LENET = GENERATED / "lenet.caffemodel"
YOLO = ROOT / "fixtures" / "real" / "yoloface-500k"
YOLO_WEIGHTS, YOLO_NET = YOLO / "yoloface-500k-v2.caffemodel", YOLO / "yoloface-500k-v2.prototxt"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _lenet_with_ip2_scaled(path, factor: float):
    """LeNet whose ip2 (the logits) is scaled: factor 1e-9 gives logits near
    1e-9, as an untrained net's can be."""
    model = blobcast.load(LENET)
    for j in range(2):
        model["ip2"].blobs[j] = blobcast.Blob(model["ip2"].blobs[j].data.numpy() * factor)
    blobcast.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny_logits(tmp_path_factory):
    """Logits near 1e-9 (A) and the same net with them twice as large (B)."""
    folder = tmp_path_factory.mktemp("tiny")
    return (_lenet_with_ip2_scaled(folder / "a.caffemodel", 1e-9),
            _lenet_with_ip2_scaled(folder / "b.caffemodel", 2e-9))


def test_a_blob_of_tiny_values_is_judged_by_its_own_range():
    a = np.full(10, 3e-9, np.float32)
    # atol 1e-5 alone passes values twice as large: judged by range it fails
    assert compare_arrays("x", a, 2 * a).passed
    judged = compare_arrays("x", a, 2 * a, range_judged=True)
    assert not judged.passed and judged.mismatched == 10
    assert judged.peak == pytest.approx(6e-9) and judged.effective_atol == pytest.approx(6e-12)
    # values near 1 keep the atol they were given
    ones = np.linspace(-1, 1, 10, dtype=np.float32)
    close = compare_arrays("x", ones, ones + 5e-6, range_judged=True)
    assert close.passed and close.effective_atol == 1e-5 and not close.too_small


def test_a_blob_without_range_is_too_small_to_judge():
    zeros = np.zeros(4, np.float32)
    result = compare_arrays("x", zeros, zeros, range_judged=True)
    assert result.passed and "every value is 0" in result.too_small
    subnormal = np.full(4, FLOAT32_TINY / 4, np.float32)
    assert "below float32's smallest normal" in compare_arrays(
        "x", subnormal, subnormal, range_judged=True).too_small
    # NaN and Inf are not part of a blob's range
    mixed = np.array([np.nan, np.inf, 2.0, -3.0], np.float32)
    assert compare_arrays("x", mixed, mixed, allow_nonfinite=True, range_judged=True).peak == 3.0


def test_verify_fails_tiny_logits_twice_off_and_names_the_side_that_strays(tiny_logits):
    a, b = tiny_logits
    result = run("verify", a, b, "--all-blobs", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["first_mismatch"] == "ip2"
    ip2 = next(c for c in report["compared"] if c["name"] == "ip2")
    assert ip2["peak"] < 1e-7 and ip2["effective_atol"] < 1e-10
    check = ip2["rounding"]
    assert check["reference"] == "A" and check["strays"] == "B"
    assert check["a_within"] and not check["b_within"]
    assert check["b_deviation"] > 1000 * check["rounding"]
    text = run("verify", a, b, "--all-blobs")
    assert "ip2: B strays from a float64 run of the engine" in text.stdout


def test_a_tolerance_for_one_blob_is_taken_as_given(tiny_logits, tmp_path):
    a, b = tiny_logits
    result = run("verify", a, b, "--all-blobs", "--tolerance", "ip2=1e-7,0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tolerances"] == {"ip2": [1e-7, 0.0]}
    ip2 = next(c for c in report["compared"] if c["name"] == "ip2")
    assert ip2["atol"] == 1e-7 and ip2["effective_atol"] == 1e-7 and ip2["rounding"] is None
    # the Python interface takes the same
    report = verify_files(str(a), str(b), RunOptions(all_blobs=True),
                          tolerances={"ip2": (1e-12, 1e-3)})
    assert not report.passed and report.first_mismatch.name == "ip2"
    assert report.first_mismatch.atol == 1e-12


def test_a_tolerance_must_name_a_compared_blob_and_two_numbers(tiny_logits):
    a, b = tiny_logits
    result = run("verify", a, b, "--tolerance", "ip2=1e-7,0", "--json")  # outputs only: prob
    assert result.exit_code == 2
    assert "'ip2', which is not compared (compared: prob)" in json.loads(result.stdout)["error"]
    for spec in ("ip2", "ip2=1e-7", "ip2=x,1", "=1,1", "ip2=-1,0", "ip2=nan,0"):
        with pytest.raises(BlobcastError, match="expected BLOB=ATOL,RTOL"):
            parse_tolerance(spec)
    assert parse_tolerance("a=b=1e-3,0") == ("a=b", (1e-3, 0.0))


def test_an_all_zero_output_is_said_to_be_too_small_to_judge(tmp_path):
    zero = _lenet_with_ip2_scaled(tmp_path / "zero.caffemodel", 0.0)
    result = run("verify", zero, zero, "--all-blobs", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["too_small"] == ["ip2"]
    text = run("verify", zero, zero, "--all-blobs").stdout
    assert "ip2: too small to judge: every value is 0" in text and "1 too small to judge" in text


@pytest.mark.slow
def test_a_real_net_failing_on_float32_rounding_is_said_to_be_rounding(tmp_path):
    onnx_file = tmp_path / "yolo.onnx"
    blobcast.convert(YOLO_WEIGHTS, onnx_file, prototxt=YOLO_NET)
    common = (YOLO_WEIGHTS, onnx_file, "--prototxt", YOLO_NET)
    # the engine and onnxruntime agree within the default tolerances...
    assert run("verify", *common).exit_code == 0
    # ...and far tighter ones fail, on float32 rounding of both sides
    result = run("verify", *common, "--atol", "0", "--rtol", "1e-6", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    failed = [c for c in report["compared"] if not c["passed"]]
    assert failed
    for comparison in failed:
        check = comparison["rounding"]
        assert check["a_within"] and check["b_within"] and check["strays"] == ""
        assert 0 < check["b_deviation"] <= check["rounding"]
    # the tolerance each verdict suggests passes that blob
    suggested = [re.search(r"--tolerance (\S+)", c["rounding"]["verdict"]).group(1) for c in failed]
    args = [arg for spec in suggested for arg in ("--tolerance", spec)]
    assert run("verify", *common, "--atol", "0", "--rtol", "1e-6", *args).exit_code == 0
    # with the ONNX file as A, the engine runs B's model in float64
    flipped = json.loads(run("verify", onnx_file, YOLO_WEIGHTS, "--prototxt", YOLO_NET, "--atol", "0",
                             "--rtol", "1e-6", "--json").stdout)
    assert {c["rounding"]["reference"] for c in flipped["compared"] if not c["passed"]} == {"B"}


def test_a_recording_that_strays_is_named_against_the_float64_run(tiny_logits, tmp_path):
    a, b = tiny_logits
    recording = tmp_path / "b.npz"
    assert run("run", b, "--all-blobs", "--save", recording).exit_code == 0
    result = run("verify", a, recording, "--all-blobs", "--json")
    assert result.exit_code == 1, result.output
    ip2 = next(c for c in json.loads(result.stdout)["compared"] if c["name"] == "ip2")
    assert ip2["rounding"]["reference"] == "A" and ip2["rounding"]["strays"] == "B"
    # the float64 run is of A's model: given the other way round, the net with
    # logits near 1e-9 is the one that strays from it
    flipped = json.loads(run("verify", b, a, "--all-blobs", "--json").stdout)
    ip2 = next(c for c in flipped["compared"] if c["name"] == "ip2")
    assert ip2["rounding"]["reference"] == "A" and ip2["rounding"]["strays"] == "B"
