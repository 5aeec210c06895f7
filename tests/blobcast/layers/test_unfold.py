"""The unfolded columns written straight from the unpadded input equal, bit
for bit, the windows read from a zero-padded copy of it."""

from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blobcast.layers.unfold import unfold


def output_shape(spatial, kernel, stride, pad, dilation):
    return [(n + 2 * p - (d * (k - 1) + 1)) // s + 1
            for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation)]


def padded_columns(x, kernel, stride, pad, dilation, part, first_row):
    """The reference: pad the input, then slice every kernel offset's windows."""
    lead = x.ndim - len(kernel)
    padded = np.pad(x, [(0, 0)] * lead + [(p, p) for p in pad])
    out = np.empty(x.shape[:lead] + (int(np.prod(kernel)),) + tuple(part), dtype=x.dtype)
    for index, offsets in enumerate(product(*[range(k) for k in kernel])):
        windows = []
        for axis, (o, d, s, n) in enumerate(zip(offsets, dilation, stride, part)):
            start = o * d + (first_row * s if axis == 0 else 0)
            windows.append(slice(start, start + s * (n - 1) + 1, s))
        out[(slice(None),) * lead + (index,)] = padded[(slice(None),) * lead + tuple(windows)]
    return out


@pytest.fixture(params=["numpy", "compiled"], autouse=True)
def unfold_path(request, monkeypatch):
    """Each test on the NumPy copies and on the compiled kernel (two spatial
    axes; taken on every size here), where numba is installed."""
    if request.param == "numpy":
        monkeypatch.setenv("BLOBCAST_COMPILED", "0")
        return request.param
    pytest.importorskip("numba")
    from blobcast.layers import compiled

    monkeypatch.setenv("BLOBCAST_COMPILED", "1")
    monkeypatch.setattr(compiled, "MIN_VALUES", 0)
    return request.param


def check(x, kernel, stride, pad, dilation, first_row=0, rows=None):
    lead = x.ndim - len(kernel)
    shape_out = output_shape(x.shape[lead:], kernel, stride, pad, dilation)
    part = [rows or shape_out[0]] + shape_out[1:]
    expected = padded_columns(x, kernel, stride, pad, dilation, part, first_row)
    # a part's buffer, two rows longer than the part, filled with a value the
    # input lacks: every slot of the part must be written, nothing past it
    columns = np.full(expected.shape[:lead + 1] + (part[0] + 2,) + tuple(part[1:]), 7.5,
                      dtype=x.dtype)
    unfold(x, columns, lead, kernel, stride, pad, dilation, first_row, part[0])
    assert columns[(slice(None),) * (lead + 1) + (slice(0, part[0]),)].tobytes() == \
        expected.tobytes()
    assert (columns[(slice(None),) * (lead + 1) + (slice(part[0], None),)] == 7.5).all()


def special_values(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[::7] = -0.0
    flat[3::11] = np.nan
    flat[5::13] = np.inf
    return x


@pytest.mark.parametrize("kernel,stride,pad,dilation", [
    ((3, 3), (1, 1), (1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 1), (1, 1)),
    ((7, 7), (2, 2), (3, 3), (1, 1)),
    ((3, 3), (1, 1), (2, 2), (2, 2)),
    ((1, 1), (2, 2), (0, 0), (1, 1)),
    ((3, 1), (1, 3), (4, 0), (1, 1)),   # padding wider than the kernel reaches
    ((2, 2), (3, 3), (5, 5), (1, 1)),   # offsets that read padding alone
    ((5, 3), (2, 1), (2, 1), (1, 3)),
])
def test_two_dimensional_geometries_equal_the_padded_copy(kernel, stride, pad, dilation):
    x = special_values((2, 3, 11, 9))
    check(x, kernel, stride, pad, dilation)


def test_a_part_of_the_output_rows_equals_those_rows_of_the_whole():
    x = special_values((4, 15, 10))  # one sample: channels, rows, columns
    for first_row, rows in [(0, 3), (3, 3), (6, 2), (7, 1)]:
        check(x, (3, 3), (2, 1), (1, 1), (1, 1), first_row, rows)


def test_one_and_three_spatial_axes():
    check(special_values((2, 3, 17)), (4,), (3,), (2,), (2,))
    check(special_values((1, 2, 5, 6, 4)), (3, 2, 3), (1, 2, 2), (1, 0, 2), (1, 1, 1))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_geometries(data):
    axes = data.draw(st.integers(1, 3))
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(axes))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(axes))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(axes))
    pad = tuple(data.draw(st.integers(0, 4)) for _ in range(axes))
    spatial = tuple(max(data.draw(st.integers(1, 9)), d * (k - 1) + 1 - 2 * p)
                    for k, d, p in zip(kernel, dilation, pad))
    x = special_values((2,) + spatial, seed=data.draw(st.integers(0, 3)))
    rows = output_shape(spatial, kernel, stride, pad, dilation)[0]
    first_row = data.draw(st.integers(0, rows - 1))
    check(x, kernel, stride, pad, dilation, first_row,
          data.draw(st.integers(1, rows - first_row)))


def test_the_compiled_kernel_takes_two_spatial_axes_in_c_order(unfold_path, monkeypatch):
    from blobcast.layers import compiled

    taken = []
    original = compiled.unfold_2d
    monkeypatch.setattr(compiled, "unfold_2d", lambda *args: taken.append(original(*args))
                        or taken[-1])
    check(special_values((2, 3, 11, 9)), (3, 3), (2, 2), (1, 1), (1, 1))
    assert taken == [unfold_path == "compiled"]
    taken.clear()
    check(special_values((2, 3, 17)), (4,), (3,), (2,), (2,))  # one axis: NumPy's copies
    check(special_values((2, 3, 11, 18))[:, :, :, ::2], (3, 3), (1, 1), (1, 1), (1, 1))  # a view
    assert taken == [False, False]
