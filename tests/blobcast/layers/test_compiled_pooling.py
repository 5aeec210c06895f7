"""MAX pooling's compiled kernel gives NumPy's values bit for bit: NaN kept,
the second of two equal operands (+0 and -0) as NumPy's maximum gives it,
the padding and the overhang of Caffe's ceil rounding as -inf."""

import numpy as np
import pytest

from blobcast.layers import compiled

from ...netgen import HEADER, net

pytest.importorskip("numba")


def _awkward(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[::7], flat[3::7] = 0.0, -0.0  # ties between signed zeros in most windows
    flat[::53], flat[::59], flat[::61] = np.nan, np.inf, -np.inf
    return x


def _bits(array):
    bits = array.view(np.uint32).copy()
    bits[np.isnan(array)] = 1
    return bits


# kernel, stride, pad, height, width, round_mode
GEOMETRIES = [(3, 2, 0, 112, 112, "CEIL"), (3, 2, 1, 15, 13, "CEIL"), (2, 2, 0, 14, 14, "CEIL"),
              (3, 1, 1, 9, 11, "FLOOR"), ((3, 2), (1, 2), (1, 0), 10, 17, "CEIL"),
              (1, 1, 0, 5, 6, "CEIL"), (5, 3, 2, 17, 16, "CEIL"), (7, 7, 0, 7, 7, "CEIL"),
              (2, 2, 0, 13, 15, "CEIL"), (2, 2, 1, 14, 14, "CEIL"), (2, 2, 0, 56, 30, "FLOOR")]
# 2x2 windows at stride 2 that tile the plane exactly have a kernel of their own
HALVES = {(2, 2, 0, 14, 14, "CEIL"), (2, 2, 0, 56, 30, "FLOOR")}


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_max_pooling_gives_numpys_bits(geometry, compiled_everywhere, monkeypatch):
    monkeypatch.setattr(compiled, "MIN_POOLED_PLANE", 0)
    kernel, stride, pad, height, width, rounding = geometry
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(pad)
    layer = (f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ pool: MAX '
             f'kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} pad_h: {ph} pad_w: {pw} '
             f'round_mode: {rounding} }} }}')
    text = HEADER % f"dim: 2 dim: 3 dim: {height} dim: {width}" + layer
    x = {"data": _awkward((2, 3, height, width), sum(map(ord, str(geometry))))}
    kernel_ran = {"max_pool_halves" if geometry in HALVES else "max_pool": 1}
    got = net(text, {}).forward(x)["p"]
    assert compiled_everywhere == kernel_ran
    monkeypatch.setenv("BLOBCAST_COMPILED", "0")
    expected = net(text, {}).forward(x)["p"]
    assert compiled_everywhere == kernel_ran
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.array_equal(_bits(got), _bits(expected))


def test_numpys_maximum_gives_the_second_of_two_zeros(monkeypatch):
    monkeypatch.setenv("BLOBCAST_COMPILED", "1")
    # what the kernel copies: checked, as NumPy documents no order for ties
    for size in (1, 7, 16, 67):
        first, second = np.full(size, -0.0, np.float32), np.zeros(size, np.float32)
        assert not np.signbit(np.maximum(first, second)).any()
        assert np.signbit(np.maximum(second, first)).all()
    assert compiled.max_pool(np.zeros((1, 1, 2, 2), np.float16), (2, 2), (1, 1), (0, 0),
                             (1, 1), (2, 2)) is None
    small = np.zeros((64, 2, 32, 32), np.float32)  # planes under MIN_POOLED_PLANE: NumPy's passes
    assert compiled.max_pool(small, (2, 2), (2, 2), (0, 0), (16, 16), (32, 32)) is None


def test_small_windows_take_the_kernel_on_one_thread_only_where_they_tile_the_plane(monkeypatch):
    monkeypatch.setenv("BLOBCAST_COMPILED", "1")
    x = np.random.default_rng(0).standard_normal((1, 2, 96, 96)).astype(np.float32)
    for threads, expected in ((1, False), (2, True)):
        monkeypatch.setattr(compiled, "compiled_threads", lambda threads=threads: threads)
        pooled = compiled.max_pool(np.ascontiguousarray(x[:, :, :95, :95]), (2, 2), (2, 2), (0, 0), (48, 48), (96, 96))
        assert (pooled is not None) == expected  # the last window overhangs
        pooled = compiled.max_pool(x, (2, 2), (2, 2), (0, 0), (48, 48), (96, 96))
        halves = np.maximum(np.maximum(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]),
                            np.maximum(x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]))
        assert np.array_equal(pooled, halves)  # exact tiling: its own kernel
    monkeypatch.setattr(compiled, "compiled_threads", lambda: 1)
    pooled = compiled.max_pool(x, (3, 3), (2, 2), (0, 0), (47, 47), (96, 96))
    expected = np.maximum.reduce([x[:, :, i:i + 93:2, j:j + 93:2] for i in range(3) for j in range(3)])
    assert np.array_equal(pooled, expected)
