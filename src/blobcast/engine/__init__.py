"""The forward-pass engine: a canonical Model's schedule (blobcast.schedule)
run with Caffe's semantics on NumPy (CPU) or CuPy (GPU); one implementation
per layer type serves both. blob_shapes is blobcast.shapes', re-exported."""

from .net import Net, array_module, blob_shapes, check_has_weights, known_layer_types, layer_included

__all__ = ["Net", "array_module", "blob_shapes", "check_has_weights", "known_layer_types",
           "layer_included"]
