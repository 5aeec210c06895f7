"""docs/layers.md is generated from the layer registry, and kept current."""

from __future__ import annotations

import importlib.util

import pytest

from blobcast.layers import LAYER_TYPES, SPECS
from blobcast.targets import BVLC_TYPES

from ...conftest import ROOT


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("layer_reference", ROOT / "scripts" / "layer_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_is_what_the_registry_gives(reference):
    assert (ROOT / "docs" / "layers.md").read_text() == reference.render(), \
        "docs/layers.md is out of date: run python scripts/layer_reference.py"
    assert reference.main(["--check"]) == 0


def test_every_type_has_a_row_and_every_fork_type_names_its_fork(reference):
    page = reference.render()
    assert {name for name in SPECS if f"| `{name}` |" not in page} == set()
    assert {name for name in SPECS if reference.origin(name, SPECS[name]) == "?"} == set()
    assert reference.origin("ConvolutionDepthwise", SPECS["ConvolutionDepthwise"]).startswith("MobileNet")
    assert reference.origin("Convolution", SPECS["Convolution"]) == "BVLC Caffe"
    assert reference.origin("Swish", SPECS["Swish"]) == "BVLC Caffe master (after 1.0)"
    forks = [name for name in SPECS if name not in BVLC_TYPES]
    assert all(reference.origin(name, SPECS[name]) != "BVLC Caffe" for name in forks)


def test_the_onnx_column_names_the_ops_the_exporters_write(reference):
    assert reference.onnx_form("ReLU") == "LeakyRelu, Relu"
    assert reference.onnx_form("Dropout") == "Identity, Mul"  # Mul: caffe-fast-rcnn's scale_train: false
    assert reference.onnx_form("ROIPooling").startswith("function (`ai.blobcast.caffe`): MaxRoiPool")
    assert "NonMaxSuppression" in reference.onnx_form("DetectionOutput")  # through its step helpers
    assert "Upsample" not in reference.onnx_form("Upsample").split(": ")[1].split(", ")
    assert reference.onnx_form("Python") == "custom node (`ai.blobcast`)"


def test_the_checked_column_comes_from_the_recorded_nets(reference):
    checks = reference.checked_against()
    assert "BVLC Caffe's recorded blobs" in checks["MVN"]  # the zoo net
    assert "the SSD fork's recorded blobs" in checks["PriorBox"]
    assert "real model `yoloface-500k`" in checks["Upsample"]
    assert "ShuffleChannel" not in checks
    assert set(checks) <= set(SPECS) and {"Convolution", "Pooling"} <= set(checks) & set(LAYER_TYPES)
