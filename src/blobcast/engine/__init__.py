"""The forward-pass engine: a canonical Model run with Caffe's semantics on
NumPy (CPU) or CuPy (GPU); one implementation per layer type serves both."""

from .net import Net, array_module, blob_shapes, check_has_weights, known_layer_types, layer_included

__all__ = ["Net", "array_module", "blob_shapes", "check_has_weights", "known_layer_types",
           "layer_included"]
