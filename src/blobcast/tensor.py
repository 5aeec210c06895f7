"""Tensors of the canonical model: shape and dtype known up front, data on demand.

A reader hands out tensors that read nothing until `numpy()` is called; where
the file allows, that call returns a view of the file's bytes (no copy).
"""

from __future__ import annotations

import os
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


class FileBytes:
    """A tensor's bytes in a file the reader holds open: `handle` has the
    file's descriptor (fileno()), `offset` the first byte's position."""

    __slots__ = ("handle", "offset")

    def __init__(self, handle, offset: int):
        self.handle = handle
        self.offset = offset


class LazyTensor(Tensor):
    """A tensor whose data a loader produces on first use (then kept).

    The loader must return an array of exactly the declared shape and dtype;
    readers that map files return views, so keeping it costs no memory.
    """

    __slots__ = ("_loader", "_array", "source", "file_bytes")

    def __init__(self, shape, dtype, loader: Callable[[], np.ndarray], source: str = "",
                 file_bytes: FileBytes | None = None):
        super().__init__(shape, dtype)
        self._loader = loader
        self._array = None
        self.source = source
        # Where the values lie verbatim (little-endian, packed) in an open
        # file: writers copy them file to file in the kernel, untouched here.
        self.file_bytes = file_bytes

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


def reshaped(tensor: Tensor, shape) -> Tensor:
    """The same values in another shape, read only when asked for (and still
    copied file to file where they lie verbatim in one)."""
    shape = tuple(int(d) for d in shape)
    if tuple(tensor.shape) == shape:
        return tensor
    return LazyTensor(shape, tensor.dtype, lambda: tensor.numpy().reshape(shape),
                      getattr(tensor, "source", ""), getattr(tensor, "file_bytes", None))


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
    in_files = getattr(a, "file_bytes", None), getattr(b, "file_bytes", None)
    if None not in in_files:
        return _same_file_bytes(*in_files, a.nbytes)
    bits = np.uint32 if a.dtype.itemsize == 4 else np.uint64
    x = np.ascontiguousarray(a.numpy()).view(bits)
    y = np.ascontiguousarray(b.numpy()).view(bits)
    return bool(np.array_equal(x, y))


_COMPARE_BYTES = 1 << 20


def _same_file_bytes(a: FileBytes, b: FileBytes, count: int) -> bool:
    """Compare two tensors' bytes where they lie in files, a piece at a time
    through small buffers: checking a written copy then maps neither file,
    which would hold both in memory."""
    first, second = a.handle.fileno(), b.handle.fileno()
    for done in range(0, count, _COMPARE_BYTES):
        size = min(_COMPARE_BYTES, count - done)
        left = os.pread(first, size, a.offset + done)
        if len(left) != size or left != os.pread(second, size, b.offset + done):
            return False
    return True


ALIGNMENT = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_values(tensor: Tensor) -> np.ndarray:
    """The tensor's values starting on a 64-byte boundary (BLAS takes slower
    paths on others, and their results differ in the last bit). Values that
    lie in a file are read from it into memory of their own, so that what a
    run holds is freed when it ends (mapped pages would stay with the
    mapping); others are the tensor's own array where it starts aligned,
    else an aligned copy."""
    in_file = getattr(tensor, "file_bytes", None)
    if in_file is not None and tensor.size:
        copy = aligned_empty(tensor.shape, tensor.dtype)
        target = memoryview(copy.reshape(-1)).cast("B")
        done = 0
        while done < tensor.nbytes:
            read = os.preadv(in_file.handle.fileno(), [target[done:]], in_file.offset + done)
            if read <= 0:
                raise ValueError(f"{tensor.source or 'tensor'}: the file ended before its values did")
            done += read
        return copy
    array = tensor.numpy()
    if array.ctypes.data % ALIGNMENT == 0 or array.size == 0:
        return array
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy
