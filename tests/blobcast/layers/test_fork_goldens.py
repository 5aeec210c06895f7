"""Fork layers against the forks' own code: the goldens in fixtures/caffe/forks2/
were written by a Caffe build carrying each fork's layer source (its
MANIFEST.md), blob for blob."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net

from ...conftest import ROOT

runner = CliRunner()
FORKS2 = ROOT / "fixtures" / "caffe" / "forks2"


def _case(name):
    model = blobcast.load(FORKS2 / f"{name}.caffemodel", prototxt=FORKS2 / f"{name}.prototxt")
    inputs = dict(np.load(FORKS2 / f"{name}.inputs.npz"))
    expected = dict(np.load(FORKS2 / f"{name}.blobs.npz"))
    return model, inputs, expected


def _assert_blobs_match(ours, expected, names):
    for name in names:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(ours[name], expected[name], rtol=0, atol=2e-6 * scale,
                                   err_msg=name)


CDW = ["cdw_dil_nobias", "cdw_khkw", "cdw_nogroup_numout2_s2", "cdw_nogroup_numout6",
       "cdw_rect_2dil", "cdw_s2_pad_bias"]


@pytest.mark.parametrize("name", CDW)
def test_convolution_depthwise_computes_as_the_fork(name):
    model, inputs, expected = _case(name)
    ours = Net(model).forward(inputs, keep_all=True)
    _assert_blobs_match(ours, expected, ["out"])


@pytest.mark.parametrize("name", ["cdw_nogroup_numout6", "cdw_nogroup_numout2_s2"])
def test_convolution_depthwise_without_group_exports_one_filter_per_channel(tmp_path, name):
    out = tmp_path / "cdw.onnx"
    result = runner.invoke(app, ["convert", str(FORKS2 / f"{name}.caffemodel"), str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    (conv,) = [node for node in onnx.load(out).graph.node if node.op_type == "Conv"]
    channels = np.load(FORKS2 / f"{name}.inputs.npz")["data"].shape[1]
    assert {a.name: a.i for a in conv.attribute}["group"] == channels


def test_convolution_depthwise_without_stride_and_pad_is_refused_as_the_fork_is():
    model = blobcast.load(FORKS2 / "cdw_no_stride_pad_refused.prototxt")
    with pytest.raises(blobcast.BlobcastError, match="the fork reads stride unchecked"):
        Net(model, random_weights=0).forward(dict(np.load(FORKS2 / "cdw_no_stride_pad_refused.inputs.npz")))
