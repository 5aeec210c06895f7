"""The engine against 118 nets run (or refused) by a Caffe build carrying the
forks' layers (fixtures/caffe/forks2/MANIFEST.md): every blob Caffe saved,
Split tops and final in-place values included, and Caffe's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import blobcast
from blobcast.engine import Net
from blobcast.errors import BlobcastError

from ...conftest import CAFFE

FORKS2 = CAFFE / "forks2"
CASES = sorted(path.name[: -len(".meta.json")] for path in FORKS2.glob("*.meta.json"))
FLOAT32_ULP = float(np.finfo(np.float32).eps)

# Cases that are not bit-exact: (bound in float32 ulps, what the ulps are of,
# why). "blob": of the blob's largest magnitude; "input": of the input's
# (where the result is far smaller than what was summed to make it).
TRANSCENDENTAL = "NumPy's exp/log/pow/tanh and the C library's differ in the last bit"
SUM_ORDER = "the same sums in another order (Caffe's loops or OpenBLAS, NumPy's pairwise sums)"
NOT_BIT_EXACT = {
    "axpy_2d": (1, "blob", "Caffe's Axpy adds a*x to y with a fused multiply-add"),
    "axpy_4d": (1, "blob", "Caffe's Axpy adds a*x to y with a fused multiply-add"),
    "axpy_se_block": (1, "blob", "the global average pool and sigmoid: " + SUM_ORDER),
    "bn_batch_stats_at_test": (1, "blob", "batch mean and variance: " + SUM_ORDER),
    "detout_center_noshare": (1, "blob", "CENTER_SIZE decoding: Caffe rounds each product "
                                         "and sum in float, the engine in float32 arrays"),
    "detout_center_var_in_target": (1, "blob", "CENTER_SIZE decoding, as detout_center_noshare"),
    "dwconv_dil_nobias": (2, "blob", "im2col GEMM: " + SUM_ORDER),
    "dwconv_khkw": (2, "blob", "im2col GEMM: " + SUM_ORDER),
    "dwconv_rect_2dil": (2, "blob", "im2col GEMM: " + SUM_ORDER),
    "dwconv_s2_pad_bias": (2, "blob", "im2col GEMM: " + SUM_ORDER),
    "eltwise_sum_coeff3": (1, "blob", "OpenBLAS axpby accumulates with fused multiply-adds"),
    "exp_base2": (2, "blob", TRANSCENDENTAL),
    "exp_e_negscale": (2, "blob", TRANSCENDENTAL),
    "log_base10": (2, "blob", TRANSCENDENTAL),
    "log_base2p5": (2, "blob", TRANSCENDENTAL),
    "lrn_across_k": (1, "blob", "the power -beta: " + TRANSCENDENTAL),
    "lrn_within_k": (1, "blob", "the power -beta: " + TRANSCENDENTAL),
    "norm_acrossF_sharedF_eps": (2, "blob", "sums of squares and their square root: " + SUM_ORDER),
    "norm_acrossF_sharedT": (2, "blob", "sums of squares and their square root: " + SUM_ORDER),
    "norm_acrossT_sharedF": (2, "blob", "sums of squares and their square root: " + SUM_ORDER),
    "norm_acrossT_sharedT": (2, "blob", "sums of squares and their square root: " + SUM_ORDER),
    "power_general": (1, "blob", "x ** 1.5: " + TRANSCENDENTAL),
    "psroi_g2_ss025": (1, "blob", "bin averages: " + SUM_ORDER),
    "psroi_g3_ss05": (1, "blob", "bin averages: " + SUM_ORDER),
    "reduction_mean_axis0": (1, "input", "a mean of 120 values near 1 that comes out near 0.01: "
                                         "the rounding is of the summands' size"),
    "reduction_sum_axis2": (1, "blob", SUM_ORDER),
    "reduction_sumsq_axisneg1": (1, "blob", SUM_ORDER),
    "train_test": (1, "blob", "Softmax's exp: " + TRANSCENDENTAL),
    "trap_inplace_then_split": (1, "blob", "TanH: " + TRANSCENDENTAL),
    "trap_reshape_inplace_top": (1, "blob", "Sigmoid's exp: " + TRANSCENDENTAL),
}

# Blobs Caffe saved that the engine does not make: it reports loss layers, it
# does not run them.
NOT_COMPUTED = {"train_test": {"loss"}}

# Known gaps outside the engine's memory and net rules.
GAPS: dict[str, str] = {}

# What the engine's refusal says, for each net Caffe refused (Caffe's line in
# NAME.caffe_error.txt): Caffe's own text for its net rules, the same fact in
# the layer's words for the checks layers make when they run.
REFUSALS = {
    "trap_consumed_then_inplace_refused": "Top blob 'data' produced by multiple sources",
    "trap_flatten_inplace_bottom_refused": "Top blob 'data' produced by multiple sources",
    "trap_reshape_inplace_bottom_refused": "Top blob 'c' produced by multiple sources",
    "shuffle_g5_refused": "12 channels do not split into 5 groups",
    "roi_pool_bad_batch_refused": "an ROI names image 2 of a batch of 2",
    "detout_bg_minus1_share_refused": "background_label_id -1 needs share_location false",
    "cdw_no_stride_pad_refused": "stride",
}


def _meta(case: str) -> dict:
    return json.loads((FORKS2 / f"{case}.meta.json").read_text())


def _load(case: str) -> blobcast.Model:
    weights = FORKS2 / f"{case}.caffemodel"
    prototxt = FORKS2 / f"{case}.prototxt"
    return blobcast.load(weights, prototxt=prototxt) if weights.exists() else blobcast.load(prototxt)


def _forward(case: str, net: Net) -> dict:
    inputs = np.load(FORKS2 / f"{case}.inputs.npz")
    return net.forward({name: inputs[name] for name in net.inputs}, keep_all=True)


def _params(case):
    marks = [pytest.mark.xfail(reason=GAPS[case], strict=True)] if case in GAPS else []
    return pytest.param(case, marks=marks, id=case)


def test_the_fixtures_are_the_118_cases_of_the_manifest():
    statuses = [_meta(case)["status"] for case in CASES]
    assert len(CASES) == 118
    assert statuses.count("ok") == 111 and statuses.count("refused") == 7
    assert sorted(case for case in CASES if _meta(case)["status"] == "refused") == sorted(REFUSALS)
    assert set(NOT_BIT_EXACT) <= set(CASES) and set(GAPS) <= set(CASES)


def _tolerance(case: str, golden: np.ndarray, inputs) -> float:
    if case not in NOT_BIT_EXACT:
        return 0.0
    ulps, of, _ = NOT_BIT_EXACT[case]
    scale = max(float(np.abs(inputs[name]).max()) for name in inputs.files) if of == "input" \
        else float(np.abs(golden).max(initial=0.0))
    return ulps * FLOAT32_ULP * scale


RAN = [_params(case) for case in CASES if _meta(case)["status"] == "ok"]


@pytest.mark.parametrize("case", RAN)
def test_the_net_is_connected_as_caffe_connects_it(case):
    # Caffe's Split layers (names, place, bottoms, tops) and the renamed bottoms.
    meta, net = _meta(case), Net(_load(case))
    assert [layer.name for layer in net.caffe_layers] == meta["layer_names"]
    assert [layer.type for layer in net.caffe_layers] == meta["layer_types"]
    assert [list(layer.bottoms) for layer in net.caffe_layers] == meta["bottoms"]
    assert [list(layer.tops) for layer in net.caffe_layers] == meta["tops"]


@pytest.mark.parametrize("case", RAN)
def test_every_blob_is_what_caffe_computed(case):
    _check_every_blob(case)


# The cases whose nets the compiled kernels (layers/compiled.py) run a part of.
COMPILED = ("BatchNorm", "Scale", "Bias", "ReLU", "ReLU6", "Dropout", "Convolution", "Eltwise",
            "ConvolutionDepthwise", "DepthwiseConvolution")


@pytest.mark.parametrize("case", [case for case in RAN
                                  if set(_meta(case.values[0])["layer_types"]) & set(COMPILED)])
def test_every_blob_is_what_caffe_computed_with_the_compiled_kernels(case, compiled_everywhere):
    _check_every_blob(case)


def test_the_compiled_kernels_ran_the_depthwise_and_in_place_cases(compiled_everywhere):
    for case in ("cdw_s2_pad_bias", "bn_default_scale_inplace", "pool_max_ceil_pad",
                 "pool_max_rect_clip"):
        _check_every_blob(case)
    assert compiled_everywhere.get("depthwise", 0) >= 1
    assert compiled_everywhere.get("run_steps", 0) >= 1
    assert compiled_everywhere.get("max_pool", 0) >= 2


def _check_every_blob(case: str) -> None:
    meta = _meta(case)
    split_source = {top: bottoms[0] for kind, bottoms, tops in
                    zip(meta["layer_types"], meta["bottoms"], meta["tops"]) if kind == "Split"
                    for top in tops}
    ours = _forward(case, Net(_load(case)))
    golden = np.load(FORKS2 / f"{case}.blobs.npz")
    inputs = np.load(FORKS2 / f"{case}.inputs.npz")
    assert golden.files == meta["blob_names"]
    compared = 0
    for name in golden.files:
        if name in NOT_COMPUTED.get(case, ()):
            continue
        # A Split top is its bottom's memory: it holds the bottom's last value.
        value = ours.get(split_source.get(name, name))
        if value is None and name in inputs.files:  # an input only a loss reads
            value = inputs[name]
        assert value is not None, f"{case}: the engine gives no blob {name!r}"
        value, expected = np.asarray(value), golden[name]
        assert value.shape == expected.shape, name
        error = float(np.abs(value.astype(np.float64) - expected).max(initial=0.0))
        assert error <= _tolerance(case, expected, inputs), \
            f"{case}: {name} is {error:.3g} off ({error / FLOAT32_ULP:.2f} x float32 eps)"
        compared += 1
    assert compared == len(golden.files) - len(NOT_COMPUTED.get(case, ()))


@pytest.mark.parametrize("case", [_params(case) for case in sorted(REFUSALS)])
def test_what_caffe_refused_is_refused_with_its_reason(case):
    caffe_said = (FORKS2 / f"{case}.caffe_error.txt").read_text()
    if "produced by multiple sources" in REFUSALS[case]:
        assert REFUSALS[case] in caffe_said
    with pytest.raises(BlobcastError, match=REFUSALS[case]):
        net = Net(_load(case), random_weights=0)  # a refused net has no .caffemodel
        _forward(case, net)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_layers_of_each_phase_stage_and_level_are_caffes(index):
    other = _meta("train_test")["extra_nets"][index]
    net = Net(_load("train_test"), phase=other["phase"], level=other.get("level", 0),
              stages=other.get("stages", ()))
    assert [layer.name for layer in net.caffe_layers] == other["layer_names"]
    assert [list(layer.tops) for layer in net.caffe_layers] == other["tops"]
