"""The engine's fast paths give what the plain paths give: in-place chains of
element-wise layers (bit for bit, and never on memory a caller or another
blob can see), the direct depthwise convolution (against the forks' loop),
the engine's threads, and the chunked blob comparison."""

import time

import numpy as np
import pytest

import blobcast
import blobcast.engine.net as engine_net
from blobcast.check.compare import CHUNK_VALUES, compare_arrays
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net
from blobcast.errors import BlobcastError
from blobcast.threads import run_blocks, set_threads, threads

CHAIN = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 dim: 9 dim: 7 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: 0.1 } }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }
layer { name: "six" type: "ReLU6" bottom: "conv" top: "conv" }
layer { name: "bias" type: "Bias" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def _chain_net(text: str = CHAIN, seed: int = 0) -> Net:
    model = net_from_text(text, "<chain>")
    rng = np.random.default_rng(seed)
    shapes = {"conv": [(6, 6, 3, 3), (6,)], "bn": [(6,), (6,), (1,)], "scale": [(6,), (6,)],
              "bias": [(6,)]}
    for name, blob_shapes in shapes.items():
        if name not in [layer.name for layer in model.layers]:
            continue
        arrays = [rng.normal(0, 1, shape) for shape in blob_shapes]
        if name == "bn":
            arrays = [arrays[0], np.abs(arrays[1]) + 0.5, np.full((1,), 2.0)]
        model[name].blobs = [blobcast.Blob(np.asarray(a, np.float32)) for a in arrays]
    return Net(model)


def _layer_by_layer(net: Net, inputs: dict, monkeypatch, **options) -> dict:
    with monkeypatch.context() as patch:
        patch.setattr(Net, "_in_place_chain", lambda *args: (0, []))
        patch.setattr(Net, "_chain_after", lambda *args: (0, []))
        return net.forward(inputs, **options)


@pytest.fixture
def chains_run(monkeypatch):
    """How many in-place chains ran (on their own, or inside the layer that
    made their blob: _chain_after), and how many layers each took."""
    lengths = []
    for method in ("_in_place_chain", "_chain_after"):
        original = getattr(Net, method)

        def counting(self, *args, original=original):
            count, steps = original(self, *args)
            if count:
                lengths.append(count)
            return count, steps

        monkeypatch.setattr(Net, method, counting)
    return lengths


@pytest.mark.parametrize("keep_all", [False, True])
def test_an_in_place_chain_gives_the_layer_by_layer_values_bit_for_bit(keep_all, monkeypatch, chains_run):
    net = _chain_net()
    x = np.random.default_rng(1).standard_normal((2, 6, 9, 7)).astype(np.float32) * 3
    fast = net.forward({"data": x}, keep_all=keep_all)
    assert chains_run == [6]  # BatchNorm .. Bias: one pass over the blob
    plain = _layer_by_layer(net, {"data": x}, monkeypatch, keep_all=keep_all)
    assert fast.keys() == plain.keys()
    for name in fast:
        assert np.array_equal(fast[name], plain[name]), name
    assert 0 < fast["pool"].max() <= 6 + np.abs(net.model["bias"].blobs[0].data.numpy()).max()


@pytest.mark.parametrize("count", [1, 2, 3, 1000])
def test_no_reference_count_decides_what_runs_in_place(count, monkeypatch, chains_run):
    # What sys.getrefcount says differs between interpreters (3.10, 3.11,
    # 3.12, free-threaded builds): whatever it says, the same layers run in
    # place and every blob is the same.
    import sys

    net = _chain_net()
    x = np.random.default_rng(1).standard_normal((2, 6, 9, 7)).astype(np.float32)
    expected = net.forward({"data": x}, keep_all=True)
    monkeypatch.setattr(sys, "getrefcount", lambda _: count)
    got = net.forward({"data": x}, keep_all=True)
    assert chains_run == [6, 6]
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[name], expected[name]) for name in got)


def _conv_then(rest: str, seed: int = 3) -> dict:
    """Every blob of a 1x1 convolution of a seeded input followed by `rest`."""
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 6 dim: 4 dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 1 } }
""" + rest
    model = net_from_text(text, "<conv then>")
    rng = np.random.default_rng(seed)
    model["conv"].blobs = [blobcast.Blob(rng.normal(0, 1, (6, 6, 1, 1)).astype(np.float32)),
                           blobcast.Blob(np.zeros(6, np.float32))]
    x = rng.standard_normal((1, 6, 4, 4)).astype(np.float32)
    return Net(model).forward({"data": x}, keep_all=True)


def test_a_chain_never_writes_an_array_another_blob_names(chains_run):
    # Dropout hands on its bottom array itself: "kept" and "conv" are one array
    # here, two blobs in Caffe (DropoutLayer copies), and the ReLU on "kept"
    # must leave "conv" as it was.
    out = _conv_then("""
layer { name: "drop" type: "Dropout" bottom: "conv" top: "kept" }
layer { name: "relu" type: "ReLU" bottom: "kept" top: "kept" }
""")
    assert chains_run == []
    assert (out["conv"] < 0).any()
    assert np.array_equal(out["kept"], np.maximum(out["conv"], 0))


def test_an_in_place_layer_on_a_flatten_top_changes_its_bottom_as_in_caffe(chains_run):
    # Flatten's top is its bottom's memory in Caffe: the ReLU on "flat"
    # rewrites "conv" too, and a later reader of "conv" sees rectified values.
    out = _conv_then("""
layer { name: "flat" type: "Flatten" bottom: "conv" top: "flat" }
layer { name: "relu" type: "ReLU" bottom: "flat" top: "flat" }
layer { name: "twice" type: "Eltwise" bottom: "conv" bottom: "conv" top: "sum" }
""")
    assert chains_run == []
    assert (out["flat"] >= 0).all() and (out["flat"] > 0).any()
    assert np.array_equal(out["conv"], out["flat"].reshape(out["conv"].shape))
    assert np.array_equal(out["sum"], 2 * out["conv"])


@pytest.mark.parametrize("rest,blob,reader", [
    ('layer { name: "drop" type: "Dropout" bottom: "conv" top: "kept" }'
     'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }', "conv", "drop"),
    ('layer { name: "flat" type: "Flatten" bottom: "conv" top: "flat" }'
     'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }'
     'layer { name: "add" type: "Eltwise" bottom: "flat" bottom: "conv" top: "sum" }', "conv", "flat"),
])
def test_an_in_place_layer_on_a_blob_another_layer_read_is_refused_as_caffe_does(rest, blob, reader):
    with pytest.raises(BlobcastError, match=f"Top blob '{blob}' produced by multiple sources: "
                                            f"layer 'relu' rewrites '{blob}' in place while "
                                            f"layer '{reader}' reads it too"):
        _conv_then(rest)


def test_an_output_the_caller_holds_from_an_earlier_pass_is_never_rewritten():
    net = _chain_net()
    x = np.random.default_rng(4).standard_normal((2, 6, 9, 7)).astype(np.float32)
    first = net.forward({"data": x})["pool"]
    kept = first.copy()
    net.forward({"data": -x})
    assert np.array_equal(first, kept)


def _depthwise_loop(x, w, b, stride, pad, dilation):
    """The forks' ConvolutionDepthwise CPU loop, written out."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    out_h = (h + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1
    out_w = (wd + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1
    y = np.zeros((n, c, out_h, out_w), np.float32)
    for i in range(n):
        for ch in range(c):
            for oh in range(out_h):
                for ow in range(out_w):
                    value = np.float32(0)
                    for kh in range(k):
                        for kw in range(k):
                            ih, iw = oh * stride - pad + kh * dilation, ow * stride - pad + kw * dilation
                            if 0 <= ih < h and 0 <= iw < wd:
                                value = np.float32(value + w[ch, 0, kh, kw] * x[i, ch, ih, iw])
                    y[i, ch, oh, ow] = value + (b[ch] if b is not None else 0)
    return y


# 5 channels of 9 x 8: each channel's planes laid flat; 48 channels of 4 x 3
# (outputs at most 3 wide): the channels laid last.
@pytest.mark.parametrize("shape", [(5, 9, 8), (48, 4, 3)])
@pytest.mark.parametrize("stride,pad,dilation,bias", [(1, 1, 1, True), (2, 1, 1, False), (1, 2, 2, True), (1, 0, 1, False),
                                                       (2, 0, 1, True)])
def test_depthwise_convolution_follows_the_forks_loop(stride, pad, dilation, bias, shape, monkeypatch):
    import blobcast.layers.convolution as convolution

    monkeypatch.setattr(convolution, "DEPTHWISE_BLOCK_BYTES", 256)  # several blocks per sample
    rng = np.random.default_rng(5)
    c, h, wd = shape
    x = rng.standard_normal((2, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    text = (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: {c} dim: {h} '
            f'dim: {wd} }} }} }}'
            f'layer {{ name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" convolution_param {{ '
            f'num_output: {c} group: {c} kernel_size: 3 stride: {stride} pad: {pad} dilation: {dilation} '
            f'bias_term: {"true" if bias else "false"} }} }}')
    model = net_from_text(text, "<dw>")
    model["dw"].blobs = [blobcast.Blob(w)] + ([blobcast.Blob(b)] if bias else [])
    y = Net(model).forward({"data": x})["dw"]
    np.testing.assert_allclose(y, _depthwise_loop(x, w, b, stride, pad, dilation), rtol=1e-6, atol=1e-6)


def test_the_thread_count_is_settable_and_checked(monkeypatch):
    set_threads(3)
    try:
        assert threads() == 3
        seen = []
        run_blocks(seen.append, 10)
        assert sorted(seen) == list(range(10))

        def fails(index):
            if index == 7:
                raise ValueError("block 7")

        with pytest.raises(ValueError, match="block 7"):
            run_blocks(fails, 10)
        # blocks go to whichever thread is free: each once, each told its thread
        taken = []
        run_blocks(lambda index, worker: taken.append((index, worker)) or time.sleep(0.001 * (index % 3)),
                   40, with_worker=True)
        assert sorted(index for index, _ in taken) == list(range(40))
        assert {worker for _, worker in taken} <= {0, 1, 2}
        with pytest.raises(BlobcastError, match="at least 1"):
            set_threads(0)
    finally:
        set_threads(None)
    monkeypatch.setenv("BLOBCAST_THREADS", "two")
    with pytest.raises(BlobcastError, match="BLOBCAST_THREADS"):
        threads()
    monkeypatch.setenv("BLOBCAST_THREADS", "1")
    assert threads() == 1
    set_threads(None)


def _direct_figures(a, b, atol, rtol):
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    difference = np.abs(x - y)
    scale = np.maximum(np.abs(x), np.abs(y))
    return {"max_abs_error": difference.max(), "mismatched": int(np.count_nonzero(difference > atol + rtol * scale)),
            "min_atol": max(0.0, (difference - rtol * scale).max()),
            "max_rel_error": np.max(np.where(scale > 0, difference / np.where(scale > 0, scale, 1), 0)),
            "min_rtol": max(0.0, np.max(np.where(difference <= atol, 0.0,
                                                 (difference - atol) / np.where(scale > 0, scale, 1))))}


def test_the_chunked_comparison_gives_the_whole_arrays_figures():
    rng = np.random.default_rng(6)
    size = CHUNK_VALUES["cpu"] * 3 + 17  # chunks and a remainder
    a = rng.standard_normal(size).astype(np.float32)
    b = a + rng.standard_normal(size).astype(np.float32) * np.float32(1e-3)
    a[size - 5] = b[size - 5] = np.nan
    a[3] = b[3] = np.inf
    a[7] = b[7] = 0.0  # 0 / 0 relative error: left out, not NaN
    result = compare_arrays("x", a.reshape(1, -1), b.reshape(1, -1), 1e-5, 1e-3, allow_nonfinite=True)
    expected = _direct_figures(a, b, 1e-5, 1e-3)
    assert result.nonfinite == 2 and result.nan_mismatches == 0
    assert result.max_abs_error == expected["max_abs_error"]
    assert result.max_rel_error == expected["max_rel_error"]
    assert result.min_atol == expected["min_atol"]
    assert result.min_rtol == expected["min_rtol"] > 0
    assert result.mismatched == expected["mismatched"] > 0
    assert not result.passed
    b[size - 5] = 1.0  # a NaN against a number fails whatever is allowed
    assert compare_arrays("x", a, b, allow_nonfinite=True).nan_mismatches == 1


@pytest.mark.parametrize("stride,pad,dilation,group", [(1, 1, 1, 1), (2, 2, 1, 2), (1, 2, 2, 1), (3, 0, 1, 1)])
def test_a_convolution_unfolded_in_parts_equals_it_unfolded_whole(stride, pad, dilation, group, monkeypatch):
    import blobcast.layers.convolution as convolution

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 17, 11)).astype(np.float32)
    w = rng.standard_normal((6, 4 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 dim: 17 dim: 11 } } }'
            f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ num_output: 6 '
            f'kernel_size: 3 stride: {stride} pad: {pad} dilation: {dilation} group: {group} }} }}')
    model = net_from_text(text, "<conv>")
    model["c"].blobs = [blobcast.Blob(w), blobcast.Blob(b)]
    whole = Net(model).forward({"data": x})["c"]
    monkeypatch.setattr(convolution, "COLUMN_BYTES", 4 * 9 * 11 * 3)  # three rows of columns
    monkeypatch.setattr(convolution, "MIN_PART_COLUMNS", 1)
    parts = Net(model).forward({"data": x})["c"]
    assert parts.shape == whole.shape
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-5)  # GEMM sums in another order


@pytest.mark.parametrize("kernel,stride,pad", [(1, 1, 0), (1, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_a_batch_side_by_side_in_one_product_equals_it_sample_by_sample(kernel, stride, pad, monkeypatch):
    import blobcast.layers.convolution as convolution

    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 16, 7, 7)).astype(np.float32)
    w = rng.standard_normal((24, 16, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 16 dim: 7 dim: 7 } } }'
            f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ num_output: 24 '
            f'kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')
    model = net_from_text(text, "<conv>")
    model["c"].blobs = [blobcast.Blob(w), blobcast.Blob(b)]
    together = Net(model).forward({"data": x})["c"]
    assert together.flags.c_contiguous
    monkeypatch.setattr(convolution, "SIDE_BY_SIDE_LOCATIONS", 0)
    apart = Net(model).forward({"data": x})["c"]
    assert together.shape == apart.shape
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-5)  # GEMM sums in another order


@pytest.mark.parametrize("pad,size", [((1, 1), (9, 7)), ((0, 0), (8, 8)), ((2, 1), (5, 6)), ((1, 1), (1, 1))])
def test_winograd_convolution_computes_the_convolution(pad, size, monkeypatch):
    import blobcast.layers.winograd as winograd

    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 5) + size).astype(np.float32)
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 '
            f'dim: {size[0]} dim: {size[1]} }} }} }}'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
            f'num_output: 4 kernel_size: 3 pad_h: {pad[0]} pad_w: {pad[1]} }} }}')
    model = net_from_text(text, "<3x3>")
    model["c"].blobs = [blobcast.Blob(rng.standard_normal((4, 5, 3, 3)).astype(np.float32)),
                        blobcast.Blob(rng.standard_normal(4).astype(np.float32))]
    exact = Net(model, winograd=False).forward({"data": x})["c"]
    fast = Net(model).forward({"data": x})["c"]
    assert fast.shape == exact.shape
    np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-5)


def test_winograd_keeps_a_caffe_forks_own_blobs_within_float32_tolerance(monkeypatch):
    # Blobs written by the SSD fork itself: eight stride-1 3x3 convolutions.
    import blobcast.layers.winograd as winograd

    from ...conftest import CAFFE, without_detection_output

    ssd = CAFFE / "ssd"
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)  # every one of them, small as they are
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    calls = []
    original = winograd.convolve
    monkeypatch.setattr(winograd, "convolve", lambda *args: calls.append(1) or original(*args))
    model = blobcast.load(ssd / "synth_a.caffemodel", prototxt=ssd / "synth_a.prototxt")
    # its DetectionOutput blobs (det_*) are not compared: the net without them runs in milliseconds
    ours = Net(without_detection_output(model)).forward(
        {"data": np.load(ssd / "synth_a_input_data.npy")}, keep_all=True)
    golden = np.load(ssd / "synth_a_blobs.npz")
    assert len(calls) == 8
    for name in golden.files:
        if not name.startswith("det_"):
            np.testing.assert_allclose(ours[name], golden[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_run_and_verify_take_winograd_on_and_off(monkeypatch):
    import json

    from typer.testing import CliRunner

    import blobcast.layers.winograd as winograd
    from blobcast.cli import app

    from ...conftest import ROOT

    calls = []
    original = winograd.convolve
    monkeypatch.setattr(winograd, "convolve", lambda *args: calls.append(1) or original(*args))
    real = ROOT / "fixtures" / "real" / "yufacedetectnet"
    weights, net = real / "yufacedetectnet-open-v1.caffemodel", real / "yufacedetectnet-open-v1.prototxt"
    runner = CliRunner()
    for flag in ("--winograd", "--no-winograd", None):
        calls.clear()
        done = runner.invoke(app, ["verify", str(weights), str(weights), "--prototxt", str(net),
                                   "--json"] + ([flag] if flag else []))
        assert done.exit_code == 0, done.output
        assert json.loads(done.output)["ok"]
        assert bool(calls) == (flag != "--no-winograd")
        calls.clear()
        done = runner.invoke(app, ["run", str(weights), "--prototxt", str(net), "--json"]
                             + ([flag] if flag else []))
        assert done.exit_code == 0, done.output
        assert bool(calls) == (flag != "--no-winograd")

def test_the_callers_input_is_used_as_it_is_and_never_written(chains_run):
    # Input -> in-place BatchNorm on the input blob itself, then the convolution.
    lines = CHAIN.strip().splitlines()
    conv, batch_norm = lines[1:3], lines[3].replace('"conv"', '"data"')
    net = _chain_net("\n".join([lines[0], batch_norm] + conv + lines[4:]))
    x = np.random.default_rng(2).standard_normal((2, 6, 9, 7)).astype(np.float32)
    before = x.copy()
    assert np.asarray(x, dtype=net.dtype) is x  # no copy of the input per pass
    out = net.forward({"data": x}, keep_all=True)
    assert np.array_equal(x, before)
    assert chains_run == [5]  # the chain on "conv" ran; the one on the caller's input did not
    assert not np.array_equal(out["data"], x)  # the blob holds BatchNorm's values, as in Caffe


@pytest.mark.parametrize("keep_all", [False, True])
def test_weights_read_layer_by_layer_give_the_held_weights_values(keep_all, chains_run):
    held = _chain_net()
    streamed = Net(held.model, hold_weights=False)
    x = np.random.default_rng(4).standard_normal((2, 6, 9, 7)).astype(np.float32)
    expected = held.forward({"data": x}, keep_all=keep_all)
    for _ in range(2):  # a second run reads them again
        got = streamed.forward({"data": x}, keep_all=keep_all)
        assert got.keys() == expected.keys()
        for name in got:
            assert np.array_equal(got[name], expected[name]), name
        # Nothing is left built once the run is over: the weights are freed.
        assert all(op is engine_net._UNBUILT for op in streamed._ops)
    assert chains_run == [6, 6, 6]  # the in-place chain still runs as one pass


def test_random_weights_are_the_same_when_read_layer_by_layer():
    model = net_from_text(CHAIN, "<chain>")
    x = np.random.default_rng(5).standard_normal((2, 6, 9, 7)).astype(np.float32)
    held = Net(model, random_weights=3).forward({"data": x})
    streamed = Net(model, random_weights=3, hold_weights=False)
    for _ in range(2):
        assert np.array_equal(streamed.forward({"data": x})["pool"], held["pool"])


# Each type the engine trusts to allocate its tops, in the settings most
# likely to hand back the bottom itself (identities, one input, 1x1 windows).
NEW_MEMORY_CASES = {
    "AbsVal": "", "BatchNorm": "batch_norm_param { use_global_stats: true }", "Bias": "",
    "BNLL": "", "Clip": "clip_param { min: -10 max: 10 }", "Concat": "", "Deconvolution":
    "convolution_param { num_output: 4 kernel_size: 1 bias_term: false }", "Convolution":
    "convolution_param { num_output: 4 kernel_size: 1 bias_term: false }", "ConvolutionDepthwise":
    "convolution_param { num_output: 4 group: 4 kernel_size: 1 stride: 1 pad: 0 bias_term: false }",
    "DepthwiseConvolution": "convolution_param { num_output: 4 group: 4 kernel_size: 1 bias_term: false }",
    "ELU": "", "Eltwise": "", "Exp": "", "InnerProduct": "inner_product_param { num_output: 4 }",
    "Log": "log_param { shift: 100 }", "LRN": "lrn_param { local_size: 1 alpha: 0 beta: 0 }",
    "Normalize": "norm_param { across_spatial: false }", "Pooling": "pooling_param { kernel_size: 1 }",
    "Power": "", "PReLU": "", "ReLU": "", "ReLU6": "", "Scale": "", "Sigmoid": "", "Softmax": "",
    "Swish": "", "TanH": "", "Threshold": "", "Axpy": "", "Upsample": "upsample_param { scale: 1 }",
}


@pytest.mark.parametrize("kind", sorted(NEW_MEMORY_CASES))
def test_a_layer_trusted_to_allocate_its_tops_never_hands_back_its_input(kind):
    from blobcast.engine.memory import NEW_MEMORY_TYPES

    assert set(NEW_MEMORY_CASES) == NEW_MEMORY_TYPES
    bottoms = {"Eltwise": ["data", "data"], "Axpy": ["scale", "data", "data"],
               "Upsample": ["data", "mask"]}.get(kind, ["data"])
    inputs = {"data": np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32),
              "scale": np.ones((1, 4, 1, 1), np.float32),
              "mask": np.arange(36, dtype=np.float32).reshape(1, 4, 3, 3) % 9}
    text = "".join(f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
                   + " ".join(f"dim: {d}" for d in inputs[name].shape) + " } } }"
                   for name in dict.fromkeys(bottoms))
    text += (f'layer {{ name: "it" type: "{kind}" ' + " ".join(f'bottom: "{b}"' for b in bottoms)
             + f' top: "out" {NEW_MEMORY_CASES[kind]} }}')
    net = Net(net_from_text(text, "<one layer>"), random_weights=0)
    given = {name: inputs[name] for name in net.inputs}
    out = net.forward(given)["out"]
    weights = [w for op in net._ops if op not in (None, engine_net._UNBUILT) for w in op.weights]
    assert not any(np.shares_memory(out, array) for array in list(given.values()) + weights)


def _reshape_chain(pairs: int) -> str:
    """Reshape after Reshape, each top rewritten in place: one group of blobs
    sharing memory that every other layer changes."""
    parts = ['layer { name: "in" type: "Input" top: "b0" input_param { shape { dim: 1 dim: 8 } } }']
    for i in range(pairs):
        parts.append(f'layer {{ name: "r{i}" type: "Reshape" bottom: "b{i}" top: "b{i + 1}" '
                     'reshape_param { shape { dim: 0 dim: -1 } } }')
        parts.append(f'layer {{ name: "s{i}" type: "Sigmoid" bottom: "b{i + 1}" top: "b{i + 1}" }}')
    return "\n".join(parts)


@pytest.mark.parametrize("keep_all", [False, True])
def test_the_bytes_held_are_counted_as_the_blobs_change(keep_all, monkeypatch):
    checked = []
    original = Net._check_budget

    def direct(self, layer, op, bottoms, run):
        arrays = {id(v): v.nbytes for v in list(run.values.values()) + list(run.kept.values())}
        checked.append((run.held_bytes, sum(arrays.values())))
        original(self, layer, op, bottoms, run)

    monkeypatch.setattr(Net, "_check_budget", direct)
    rest = ('layer { name: "ip" type: "InnerProduct" bottom: "b20" top: "ip" '
            'inner_product_param { num_output: 8 } }'
            'layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }'
            'layer { name: "drop" type: "Dropout" bottom: "ip" top: "d" }'
            'layer { name: "flat" type: "Flatten" bottom: "d" top: "f" }'
            'layer { name: "sum" type: "Eltwise" bottom: "f" bottom: "b3" top: "e" }')
    net = Net(net_from_text(_reshape_chain(20) + rest, "<both>"), random_weights=0)
    net.forward({"b0": np.ones((1, 8), np.float32)}, keep_all=keep_all)
    assert len(checked) == len(net.layers)
    assert all(counted == direct for counted, direct in checked)


@pytest.mark.slow
def test_a_long_group_of_blobs_sharing_memory_costs_a_linear_pass():
    # 16,000 layers: each in-place write reaches every blob of the group, lazily.
    net = Net(net_from_text(_reshape_chain(8000), "<chain>"))
    start = time.perf_counter()
    out = net.forward({"b0": np.zeros((1, 8), np.float32)}, keep_all=True)
    assert time.perf_counter() - start < 30  # about 1.5 s; quadratic work took minutes
    assert all(np.array_equal(out[f"b{i}"], out["b8000"].reshape(out[f"b{i}"].shape)) for i in range(8001))


def test_equal_chunks_take_the_short_way_to_the_same_figures():
    rng = np.random.default_rng(8)
    size = CHUNK_VALUES["cpu"] * 2 + 5
    a = rng.standard_normal(size).astype(np.float32)
    b = a.copy()
    b[-1] += np.float32(1.0)  # the last chunk differs, the others are equal
    expected = _direct_figures(a, b, 1e-5, 1e-3)
    result = compare_arrays("x", a, b, 1e-5, 1e-3)
    assert result.max_abs_error == expected["max_abs_error"]
    assert result.min_atol == expected["min_atol"] and result.min_rtol == expected["min_rtol"]
    assert result.mismatched == expected["mismatched"] == 1
    same = compare_arrays("x", a, a.copy())
    assert same.passed and same.max_abs_error == same.max_rel_error == same.min_atol == 0.0
    assert abs(same.cosine_similarity - 1.0) < 1e-12 and same.mean_abs_error == 0.0
    a[3] = np.inf  # equal but not finite: counted as the general way counts it
    infinite = compare_arrays("x", a, a.copy())
    assert infinite.nonfinite == 1 and not infinite.passed and infinite.cosine_similarity is None
