"""The forward-pass engine: a canonical Model's schedule (blobcast.schedule)
run with Caffe's semantics on NumPy (CPU) or CuPy (GPU); one implementation
per layer type serves both. Whole-net shapes are blobcast.shapes'."""

from .net import Net, array_module, known_layer_types

__all__ = ["Net", "array_module", "known_layer_types"]
