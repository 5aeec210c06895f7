"""Caffe Python layers (`type: "Python"`), run through Caffe's Python-layer interface.

Importing a layer's module runs its code, so the engine does it only when the
user allows it (--allow-python-layers).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from contextlib import contextmanager

import numpy as np

from ..errors import BlobcastError
from ..layers.base import LayerOp


class PythonBlob:
    """The `bottom[i]` / `top[i]` object a Caffe Python layer sees."""

    def __init__(self, data: np.ndarray | None = None):
        self.data = data if data is not None else np.zeros((0,), np.float32)
        self.diff = np.zeros_like(self.data)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def count(self):
        return self.data.size

    def _axis(self, index):
        return self.data.shape[index] if self.data.ndim > index else 1

    num = property(lambda self: self._axis(0))
    channels = property(lambda self: self._axis(1))
    height = property(lambda self: self._axis(2))
    width = property(lambda self: self._axis(3))


class CaffeLayer:
    """`caffe.Layer` as a Python layer subclasses it: the four methods, each a
    no-op until the layer defines it."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


def caffe_standin() -> types.ModuleType:
    """A minimal `caffe` module: Layer and the phases, what a Python layer's
    module needs to import where pycaffe is not installed."""
    module = types.ModuleType("caffe", "blobcast's stand-in for pycaffe (Layer, TRAIN, TEST)")
    module.Layer = CaffeLayer
    module.TRAIN, module.TEST = 0, 1
    return module


@contextmanager
def caffe_importable():
    """`import caffe` works inside: pycaffe if it is installed, else the
    stand-in, present only while the block runs (the imported layer module
    keeps its own reference)."""
    if "caffe" in sys.modules or importlib.util.find_spec("caffe") is not None:
        yield
        return
    standin = sys.modules["caffe"] = caffe_standin()
    try:
        yield
    finally:
        if sys.modules.get("caffe") is standin:
            del sys.modules["caffe"]


class PythonLayer(LayerOp):
    allowed = False
    search_path: tuple[str, ...] = ()

    def setup(self):
        spec = self.layer.spec.python_param
        where = f"{spec.module}.{spec.layer}"
        if not self.allowed:
            raise BlobcastError(
                f"layer {self.name!r} is a Python layer ({where}); running it imports and runs "
                "that code: pass --allow-python-layers (and --python-path DIR) to allow it")
        for folder in reversed(self.search_path):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        try:
            with caffe_importable():
                module = importlib.import_module(spec.module)
            layer_class = getattr(module, spec.layer)
        except (ImportError, AttributeError, SyntaxError) as error:
            raise BlobcastError(f"layer {self.name!r}: cannot load {where}: {error}") from error
        self.instance = layer_class()
        self.instance.param_str = spec.param_str
        self.instance.param_str_ = spec.param_str  # the name before pycaffe 1.0 (py-faster-rcnn)
        self.instance.phase = 1 if self.phase == "TEST" else 0
        self.instance.blobs = [PythonBlob(np.array(w)) for w in self.weights]
        self.ready = False

    def forward(self, *bottoms):
        xp = self.xp
        bottom = [PythonBlob(np.asarray(b.get() if hasattr(b, "get") else b)) for b in bottoms]
        top = [PythonBlob() for _ in self.layer.tops]
        try:
            if not self.ready:
                self.instance.setup(bottom, top)
                self.ready = True
            self.instance.reshape(bottom, top)
            self.instance.forward(bottom, top)
        except Exception as error:
            raise BlobcastError(f"layer {self.name!r}: the Python layer failed: "
                                f"{type(error).__name__}: {error}") from error
        return tuple(xp.asarray(t.data) for t in top)
