"""Winograd's F(2x2, 3x3): the NumPy transforms against a float64 direct
sum, the compiled kernels against the NumPy transforms bit for bit, and
the same bits on any thread count; NaN and infinity as Caffe's sums give
them."""

import numpy as np
import pytest

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net
from blobcast.layers import compiled, winograd
from blobcast.layers.steps import ADD, MULTIPLY, RELU, Step


def direct(x, weight, bias, pad):
    """The convolution summed in float64, from a zero-padded copy."""
    n, channels, height, width = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    out_h, out_w = height + 2 * pad[0] - 2, width + 2 * pad[1] - 2
    windows = np.empty((n, channels, 9, out_h, out_w))
    for i in range(3):
        for j in range(3):
            windows[:, :, 3 * i + j] = padded[:, :, i:i + out_h, j:j + out_w]
    y = np.einsum("ok,nkp->nop", weight.reshape(len(weight), -1).astype(np.float64),
                  windows.reshape(n, channels * 9, -1)).reshape(n, -1, out_h, out_w)
    return y if bias is None else y + bias[:, None, None]


def case(rng, n, channels, outputs, size, dtype=np.float32, bias=True):
    x = rng.standard_normal((n, channels) + size).astype(dtype)
    weight = (rng.standard_normal((outputs, channels, 3, 3)) / np.sqrt(9 * channels)).astype(dtype)
    return x, weight, rng.standard_normal(outputs).astype(dtype) if bias else None


# (batch, channels, outputs, input size, padding): odd and even sizes, no
# padding and more padding than the kernel reaches, a single tile, inputs
# narrower than a tile.
GEOMETRIES = [(2, 16, 8, (9, 7), (1, 1)), (1, 32, 40, (30, 31), (0, 2)), (3, 20, 5, (5, 4), (2, 0)),
              (1, 64, 64, (56, 56), (1, 1)), (2, 3, 4, (1, 1), (1, 1)), (1, 5, 3, (3, 3), (0, 0)),
              (1, 8, 6, (2, 13), (1, 3))]


@pytest.fixture(params=["numpy", "compiled"])
def path(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setenv("BLOBCAST_COMPILED", "0")
    else:
        pytest.importorskip("numba")
        monkeypatch.setenv("BLOBCAST_COMPILED", "1")
        monkeypatch.setattr(compiled, "MIN_VALUES", 0)
        monkeypatch.setattr(compiled, "FROM_PASS", 0)
    return request.param


@pytest.mark.parametrize("n,channels,outputs,size,pad", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_the_transforms_compute_the_convolution(n, channels, outputs, size, pad, bias, path):
    rng = np.random.default_rng(channels * 31 + size[0])
    x, weight, b = case(rng, n, channels, outputs, size, bias=bias)
    y = winograd.convolve(np, x, winograd.transformed_filters(np, weight), b, pad, [])
    expected = direct(x, weight, b, pad)
    assert y.shape == expected.shape and y.dtype == np.float32
    # within a float32 sum's rounding: a few units of the last place of the largest value
    assert np.abs(y - expected).max() <= 8 * np.finfo(np.float32).eps * np.abs(expected).max()


def test_its_error_is_a_direct_float32_sums_on_a_vgg_layer():
    # 256 channels at 56x56, as VGG16's conv3_2: measured 6.1e-7 of the
    # largest value, against 4.0e-7 for the float32 product of the unfolded
    # input (F(4x4, 3x3) gave 1.0e-5 on the same layer).
    rng = np.random.default_rng(5)
    x, weight, b = case(rng, 1, 256, 32, (56, 56))
    x = np.maximum(x, 0)  # a ReLU's output, as it is in a net
    y = winograd.convolve(np, x, winograd.transformed_filters(np, weight), b, (1, 1), [])
    expected = direct(x, weight, b, (1, 1))
    padded = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    columns = np.stack([padded[:, i:i + 56, j:j + 56] for i in range(3) for j in range(3)], 1)
    unfolded = weight.reshape(32, -1) @ columns.reshape(256 * 9, -1) + b[:, None]
    scale = np.abs(expected).max()
    error, unfolded_error = (np.abs(v - expected).max() / scale for v in (y, unfolded.reshape(
        expected.shape)))
    assert error < 3 * unfolded_error and error < 1.5e-6


@pytest.mark.parametrize("n,channels,outputs,size,pad", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow,
                                                            id="float64")])  # a second compile
def test_the_compiled_kernels_give_the_numpy_transforms_bits(n, channels, outputs, size, pad,
                                                             dtype, monkeypatch):
    pytest.importorskip("numba")
    rng = np.random.default_rng(size[1])
    x, weight, b = case(rng, n, channels, outputs, size, dtype)
    x[..., 0, 0] = -0.0
    filters = winograd.transformed_filters(np, weight)
    steps = [Step(MULTIPLY, rng.standard_normal(outputs).astype(dtype)), Step(RELU, 0.0)]
    monkeypatch.setenv("BLOBCAST_COMPILED", "0")
    expected = winograd.convolve(np, x, filters, b, pad, steps)
    monkeypatch.setenv("BLOBCAST_COMPILED", "1")
    monkeypatch.setattr(compiled, "MIN_VALUES", 0)
    assert winograd.convolve(np, x, filters, b, pad, steps).tobytes() == expected.tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("part_tiles", [1, 7, 100000])
def test_parts_and_threads_never_change_a_bit(threads, part_tiles, monkeypatch):
    # Parts of one tile row to the whole sample, taken by 1-3 threads, or
    # each shared between them: every product is the same BLAS call.
    pytest.importorskip("numba")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import blobcast.threads as engine_threads

    monkeypatch.setattr(compiled, "MIN_VALUES", 0)
    rng = np.random.default_rng(9)
    x, weight, b = case(rng, 2, 24, 40, (23, 30))
    filters = winograd.transformed_filters(np, weight)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        expected = winograd.convolve(np, x, filters, b, (1, 1), [Step(ADD, 0.5)])
    monkeypatch.setattr(winograd, "MIN_PART_TILES", part_tiles)
    monkeypatch.setattr(winograd, "PART_BYTES", 0)
    monkeypatch.setattr(engine_threads, "_kernel_threads", lambda: threads)
    monkeypatch.setattr(engine_threads, "threads", lambda: threads)
    got = winograd.convolve(np, x, filters, b, (1, 1), [Step(ADD, 0.5)])
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_nan_or_infinity_reaches_the_outputs_a_direct_sum_gives_it(value, path):
    # The transforms would spread it over the 2x2 block of outputs around
    # it (and make inf - inf = NaN): such a layer is summed in Caffe's order.
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 16 '
            'dim: 12 dim: 12 } } }'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { '
            'num_output: 4 kernel_size: 3 pad: 1 } }')
    model = net_from_text(text, "<3x3>")
    rng = np.random.default_rng(2)
    model["c"].blobs = [blobcast.Blob(np.abs(rng.standard_normal((4, 16, 3, 3))).astype(np.float32)),
                        blobcast.Blob(np.zeros(4, np.float32))]
    x = np.abs(rng.standard_normal((1, 16, 12, 12))).astype(np.float32)
    x[0, 3, 5, 5] = value
    fast, exact = Net(model), Net(model, winograd=False)
    assert fast.forward({"data": x})["c"].tobytes() == exact.forward({"data": x})["c"].tobytes()
    y = exact.forward({"data": x})["c"]
    assert np.isfinite(y[0, :, 3, 3]).all() and not np.isfinite(y[0, :, 4:7, 4:7]).any()


def test_layers_it_does_not_take_are_summed_in_caffes_order():
    assert winograd.applies((3, 3), (1, 1), (1, 1), 1, 4, 64, (56, 56))
    assert not winograd.applies((3, 3), (2, 2), (1, 1), 1, 4, 64, (28, 28))  # stride
    assert not winograd.applies((3, 3), (1, 1), (2, 2), 1, 4, 64, (56, 56))  # dilation
    assert not winograd.applies((3, 3), (1, 1), (1, 1), 2, 4, 64, (56, 56))  # groups
    assert not winograd.applies((5, 5), (1, 1), (1, 1), 1, 4, 64, (56, 56))
    assert not winograd.applies((3, 3), (1, 1), (1, 1), 1, 5, 64, (8, 56, 56))  # 3-D
    assert not winograd.applies((3, 3), (1, 1), (1, 1), 1, 4, 3, (224, 224))  # few channels
    assert not winograd.applies((3, 3), (1, 1), (1, 1), 1, 4, 512, (7, 7))  # few tiles


def test_a_real_nets_blobs_stay_within_float32_rounding_of_caffes_order(monkeypatch):
    # libfacedetection's YuFaceDetectNet with its real weights: its 3x3
    # convolutions of 16 channels and more by Winograd, every blob against
    # the pass summed in Caffe's order (which tests/project holds to OpenCV).
    # Measured: 2.2e-6 of a blob's largest value at most; OpenCV's blobs are
    # up to 9.4e-6 away from the same pass.
    from ...conftest import ROOT

    real = ROOT / "fixtures" / "real" / "yufacedetectnet"
    model = blobcast.load(real / "yufacedetectnet-open-v1.caffemodel",
                          prototxt=real / "yufacedetectnet-open-v1.prototxt")
    calls = []
    original = winograd.convolve
    monkeypatch.setattr(winograd, "convolve", lambda *args: calls.append(1) or original(*args))
    x = np.random.RandomState(0).uniform(0, 255, size=(1, 3, 240, 320)).astype(np.float32)
    fast = Net(model).forward({"data": x}, keep_all=True)
    assert len(calls) >= 8
    exact = Net(model, winograd=False).forward({"data": x}, keep_all=True)
    for name, value in exact.items():
        if name != "detection_out":  # boxes above a score threshold: compared as OpenCV's are
            scale = max(1.0, float(np.abs(value).max()))
            np.testing.assert_allclose(fast[name], value, rtol=0, atol=3e-6 * scale, err_msg=name)
    np.testing.assert_allclose(fast["detection_out"], exact["detection_out"], atol=1e-4)


class _DeviceLike:
    """NumPy under another name: the path an array module other than NumPy
    (CuPy) takes, a sample at a time, without the compiled kernels."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_the_device_path_computes_the_convolution_and_gives_up_on_nan():
    rng = np.random.default_rng(4)
    x, weight, b = case(rng, 2, 24, 16, (20, 18))
    filters = winograd.transformed_filters(_DeviceLike(), weight)
    steps = [Step(RELU, 0.0)]
    y = winograd.convolve(_DeviceLike(), x, filters, b, (1, 1), steps)
    expected = np.maximum(direct(x, weight, b, (1, 1)), 0)
    assert np.abs(y - expected).max() <= 8 * np.finfo(np.float32).eps * np.abs(expected).max()
    x[1, 3, 4, 4] = np.inf
    assert winograd.convolve(_DeviceLike(), x, filters, b, (1, 1), steps) is None
