"""The compiled kernels (the `fast` extra) give NumPy's values bit for bit:
element-wise steps and depthwise convolutions, on any thread count, and
leave to NumPy what NumPy would compute in another type."""

import os

import numpy as np
import pytest

from blobcast.layers import compiled
from blobcast.layers.steps import ADD, CLIP, DIVIDE, MULTIPLY, OPERATIONS, RELU, SUBTRACT, Step, apply_steps

from ...conftest import ROOT
from ...netgen import HEADER, net

pytest.importorskip("numba")
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _bits(array: np.ndarray) -> np.ndarray:
    """The values' bits, every NaN as one (which NaN an operation on two
    NaNs gives depends on its operands' order, which LLVM may swap)."""
    bits = array.view(np.uint32 if array.dtype == np.float32 else np.uint64).copy()
    bits[np.isnan(array)] = 1
    return bits


def _awkward(shape, dtype, seed=0) -> np.ndarray:
    """Values with signed zeros, NaN and infinities among them."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype) * 4
    flat = x.reshape(-1)
    flat[::97], flat[::89], flat[::1001], flat[::1003], flat[::1007] = 0.0, -0.0, np.nan, np.inf, -np.inf
    return x


def _steps(channels: int, dtype) -> list:
    rng = np.random.default_rng(1)
    vector = lambda: rng.standard_normal(channels).astype(dtype)  # noqa: E731
    return [Step(SUBTRACT, vector()), Step(DIVIDE, np.abs(vector()) + dtype(0.1)),
            Step(MULTIPLY, vector()), Step(ADD, vector()), Step(RELU, 0.1), Step(RELU, 0.0),
            Step(MULTIPLY, 0.5), Step(CLIP, 0.0, 6.0), Step(ADD, 3.0), Step(DIVIDE, 0.7)]


# a plane in one band, and in two and part of a third (compiled_kernels.SUM_VALUES)
SHAPES = [(3, 7, 11, 5), (2, 3, 50, 47)]
# float64 blobs compile every kernel a second time (numba, a few seconds on
# a machine without its cache): run by CI's full jobs, not the default run.
DTYPES = [np.float32, pytest.param(np.float64, marks=pytest.mark.slow, id="float64")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_step_gives_numpys_bits(dtype, workers, shape, compiled_everywhere, monkeypatch):
    monkeypatch.setattr(compiled, "compiled_threads", lambda: workers)
    steps = _steps(shape[1], dtype)
    assert {step.operation for step in steps} == set(OPERATIONS)
    for count in range(1, len(steps) + 1):
        expected, got = _awkward(shape, dtype), _awkward(shape, dtype)
        for sample in range(expected.shape[0]):
            apply_steps(np, expected[sample], steps[:count], slice(None))
        assert compiled.run_steps(got, steps[:count])
        assert np.array_equal(_bits(got), _bits(expected)), steps[count - 1].operation
    assert compiled_everywhere["run_steps"] == len(steps)


def test_values_numpy_would_widen_are_left_to_numpy(compiled_everywhere):
    # float32 blob, float64 per-channel values: NumPy computes in float64.
    x = np.ones((2, 3, 4, 4), np.float32)
    assert not compiled.run_steps(x, [Step(SUBTRACT, np.ones(3))])
    assert not compiled.run_steps(x.astype(np.float16), [Step(RELU, 0.0)])
    assert not compiled.run_steps(x[:, :, ::2], [Step(RELU, 0.0)])  # not contiguous
    assert compiled_everywhere == {}


def test_small_blobs_and_the_switch_leave_it_to_numpy(monkeypatch):
    x = np.ones((1, 2, 3, 3), np.float32)
    assert not compiled.run_steps(x, [Step(RELU, 0.0)])  # below MIN_VALUES
    monkeypatch.setattr(compiled, "MIN_VALUES", 0)
    monkeypatch.setenv("BLOBCAST_COMPILED", "0")
    assert not compiled.enabled() and not compiled.run_steps(x, [Step(RELU, 0.0)])


# kernel, stride, pad, dilation, height, width, channels, bias
GEOMETRIES = [(3, 1, 1, 1, 13, 11, 5, True), (3, 2, 1, 1, 14, 15, 4, False),
              (5, 2, 2, 1, 9, 9, 3, True), (3, 1, 0, 2, 12, 10, 2, True),
              (3, 3, 3, 1, 8, 13, 3, True), (1, 1, 0, 1, 5, 5, 3, False),
              (3, 2, 0, 1, 7, 7, 6, True), (4, 2, 3, 2, 10, 11, 3, True),
              ((3, 1), (1, 2), (2, 0), (1, 1), 9, 12, 4, True),
              # planes summed in several bands (compiled_kernels.SUM_VALUES)
              (3, 1, 1, 1, 70, 66, 2, True), (3, 2, 1, 1, 131, 97, 2, False),
              (5, 1, 2, 1, 64, 40, 2, False)]


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_depthwise_gives_numpys_bits(geometry, dtype, compiled_everywhere, monkeypatch):
    kernel, stride, pad, dilation, height, width, channels, bias = geometry
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    rng = np.random.default_rng(sum(map(hash, map(str, geometry))) % 1000)
    x = _awkward((2, channels, height, width), np.float32).astype(dtype)
    weights = [rng.standard_normal((channels, 1, kh, kw)).astype(np.float32)]
    weights[0].reshape(-1)[::5] = -0.0
    weights += [rng.standard_normal(channels).astype(np.float32)] if bias else []
    layer = (f'layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ '
             f'num_output: {channels} group: {channels} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} '
             f'stride_w: {sw} pad_h: {ph} pad_w: {pw} dilation: {_pair(dilation)[0]} '
             f'bias_term: {str(bias).lower()} }} }}')
    text = HEADER % f"dim: 2 dim: {channels} dim: {height} dim: {width}" + layer
    precision = None if dtype == np.float32 else np.float64
    got = net(text, {"c": weights}, precision=precision).forward({"data": x})["c"]
    assert compiled_everywhere == {"depthwise": 1}
    monkeypatch.setenv("BLOBCAST_COMPILED", "0")
    expected = net(text, {"c": weights}, precision=precision).forward({"data": x})["c"]
    assert got.dtype == expected.dtype == dtype
    assert np.array_equal(_bits(got), _bits(expected))
    assert compiled_everywhere == {"depthwise": 1}


def test_the_kernels_are_not_imported_with_blobcast():
    import subprocess
    import sys

    code = "import sys, blobcast, blobcast.engine; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("columns", [(0, 55), (1100, 3300), (4000, 4700)])
def test_steps_on_a_part_of_the_columns_give_numpys_bits(dtype, columns, compiled_everywhere):
    # a convolution's part: its columns of a sample's (channels x positions) output
    start, end = columns
    plane = _awkward((1, 7, 4700), dtype, seed=4)[0]
    expected = plane.copy()
    steps = _steps(7, dtype)
    apply_steps(np, expected[:, start:end], steps, slice(None))
    assert compiled.run_steps_on_columns(plane, start, end, steps)
    assert np.array_equal(_bits(plane), _bits(expected))  # the other columns untouched
    assert not compiled.run_steps_on_columns(plane, start, end, [Step(ADD, np.ones(7, np.float16))])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_sum_then_steps_gives_numpys_bits(dtype, shape, compiled_everywhere):
    first, second = _awkward(shape, dtype, seed=2), _awkward(shape, dtype, seed=3)
    steps = _steps(shape[1], dtype)[:6]
    expected = first + second
    for sample in range(expected.shape[0]):
        apply_steps(np, expected[sample], steps, slice(None))
    got = compiled.add(first, second, steps)
    assert np.array_equal(_bits(got), _bits(expected))
    assert compiled.add(first, second.astype(np.float16)) is None
    assert compiled_everywhere == {"add_then_steps": 1}


REAL = ROOT / "fixtures" / "real"


@pytest.mark.parametrize("weights,prototxt", [
    (None, REAL / "mobilenet-caffe" / "mobilenet_deploy.prototxt"),
    (None, REAL / "mobilenet-caffe" / "mobilenet_v2_deploy.prototxt"),  # residual Eltwise sums
    (None, REAL / "depthwise-mobilenet" / "depthwised_mobilenet_deploy.prototxt"),  # the fork's type
    (REAL / "yufacedetectnet" / "yufacedetectnet-open-v1.caffemodel",
     REAL / "yufacedetectnet" / "yufacedetectnet-open-v1.prototxt"),
], ids=["mobilenet-v1", "mobilenet-v2", "depthwise-mobilenet", "yufacedetectnet"])
def test_real_nets_give_every_blob_numpys_bits_with_the_kernels(weights, prototxt, monkeypatch):
    # Published deploy nets (random weights where the fixture has none) and a
    # real detector with its weights, at batch 2: every blob with the
    # compiled kernels (products shared where threadpoolctl is) equals the
    # NumPy engine's on one thread.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import blobcast
    import blobcast.threads as threads
    from blobcast.engine import Net

    model = blobcast.load(weights, prototxt=prototxt) if weights else blobcast.load(prototxt)
    net = Net(model, random_weights=None if weights else 7)
    shape = (2, 3, 240, 320) if weights else (2, 3, 224, 224)
    x = {net.model.layers[0].tops[0] if not net.inputs else next(iter(net.inputs)):
         np.random.default_rng(5).uniform(-1, 1, shape).astype(np.float32)}
    for module in (threads, compiled):
        monkeypatch.setattr(module, "compiled_threads", lambda: 2)
    monkeypatch.setattr(compiled, "FROM_PASS", 0)
    kernels = []
    original = compiled._in_ranges
    monkeypatch.setattr(compiled, "_in_ranges", lambda kernel, *args: kernels.append(
        kernel.__name__) or original(kernel, *args))
    got = net.forward(x, keep_all=True)
    assert {"depthwise", "run_steps"} <= set(kernels) or weights  # the detector has no depthwise
    assert kernels
    monkeypatch.setenv("BLOBCAST_COMPILED", "0")
    for module in (threads, compiled):
        monkeypatch.setattr(module, "compiled_threads", lambda: 1)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        expected = net.forward(x, keep_all=True)
    assert got.keys() == expected.keys()
    for name in got:
        assert np.array_equal(_bits(np.asarray(got[name])), _bits(np.asarray(expected[name]))), name


def test_a_net_takes_the_kernels_from_its_second_pass_with_the_same_values(monkeypatch):
    # Loading them costs a one-shot run more than they save in one pass.
    monkeypatch.setattr(compiled, "MIN_VALUES", 0)
    monkeypatch.setattr(compiled, "compiled_threads", lambda: 2)
    kernels = []
    original = compiled._in_ranges
    monkeypatch.setattr(compiled, "_in_ranges", lambda kernel, *args: kernels.append(
        kernel.__name__) or original(kernel, *args))
    text = HEADER % "dim: 2 dim: 4 dim: 9 dim: 9" + (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
        'num_output: 4 group: 4 kernel_size: 3 pad: 1 } }'
        'layer { name: "r" type: "ReLU" bottom: "c" top: "c" relu_param { negative_slope: 0.2 } }')
    rng = np.random.default_rng(1)
    engine = net(text, {"c": [rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4)]})
    x = {"data": rng.standard_normal((2, 4, 9, 9)).astype(np.float32)}
    first = engine.forward(x)["c"]
    assert kernels == []
    second = engine.forward(x)["c"]
    assert kernels == ["depthwise"]
    assert np.array_equal(_bits(first), _bits(second))
