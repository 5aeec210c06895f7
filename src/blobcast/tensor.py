"""Tensors of the canonical model: shape and dtype known up front, data on demand.

A reader hands out tensors that read nothing until `numpy()` is called; where
the file allows, that call returns a view of the file's bytes (no copy).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import numpy as np

MAX_AXES = 32  # Caffe's kMaxBlobAxes
SUPPORTED_DTYPES = (np.dtype("<f4"), np.dtype("<f8"))


def check_shape(shape, what: str = "tensor") -> tuple[int, ...]:
    """Validate a tensor shape the way Caffe's Blob::Reshape does."""
    shape = tuple(int(d) for d in shape)
    if len(shape) > MAX_AXES:
        raise ValueError(f"{what} has {len(shape)} axes; Caffe allows at most {MAX_AXES}")
    if any(d < 0 for d in shape):
        raise ValueError(f"{what} has a negative dimension in shape {list(shape)}")
    return shape


class Tensor:
    """Base class: a shaped, typed block of numbers."""

    __slots__ = ("_shape", "_dtype")

    def __init__(self, shape, dtype):
        self._shape = check_shape(shape)
        self._dtype = np.dtype(dtype).newbyteorder("<")
        if self._dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"unsupported tensor dtype {self._dtype}; Caffe stores float32 or float64")

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def size(self) -> int:
        return prod(self._shape)

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def is_loaded(self) -> bool:
        return True

    def numpy(self) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={list(self._shape)}, dtype={self._dtype.name})"


class ArrayTensor(Tensor):
    """A tensor held in memory as a NumPy array (read-only view)."""

    __slots__ = ("_array",)

    def __init__(self, array):
        array = np.asarray(array)
        if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
            raise ValueError(f"unsupported tensor dtype {array.dtype}; use float32 or float64")
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        super().__init__(array.shape, array.dtype)
        view = array.view()
        view.flags.writeable = False
        self._array = view

    def numpy(self) -> np.ndarray:
        return self._array


class LazyTensor(Tensor):
    """A tensor whose data a loader produces on first use (then kept).

    The loader must return an array of exactly the declared shape and dtype;
    readers that map files return views, so keeping it costs no memory.
    """

    __slots__ = ("_loader", "_array", "source")

    def __init__(self, shape, dtype, loader: Callable[[], np.ndarray], source: str = ""):
        super().__init__(shape, dtype)
        self._loader = loader
        self._array = None
        self.source = source

    @property
    def is_loaded(self) -> bool:
        return self._array is not None

    def numpy(self) -> np.ndarray:
        if self._array is None:
            try:
                array = self._loader()
            except (OSError, ValueError, RuntimeError) as error:
                from .errors import FormatError

                raise FormatError(f"cannot be read: {error}", self.source or None) from error
            if array.shape != self._shape or array.dtype != self._dtype:
                raise ValueError(
                    f"{self.source or 'tensor'}: loader gave {array.dtype.name}{list(array.shape)}, "
                    f"expected {self._dtype.name}{list(self._shape)}"
                )
            if array.flags.writeable:
                array = array.view()
                array.flags.writeable = False
            self._array = array
        return self._array


def as_tensor(value) -> Tensor:
    """Accept a Tensor or anything NumPy can turn into a float array."""
    if isinstance(value, Tensor):
        return value
    return ArrayTensor(np.asarray(value))


def same_bits(a: Tensor, b: Tensor) -> bool:
    """True when two tensors have the same shape, dtype and bit pattern."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a is b:
        return True
    bits = np.uint32 if a.dtype.itemsize == 4 else np.uint64
    x = np.ascontiguousarray(a.numpy()).view(bits)
    y = np.ascontiguousarray(b.numpy()).view(bits)
    return bool(np.array_equal(x, y))
