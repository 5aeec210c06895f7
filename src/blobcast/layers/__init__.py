"""One home per Caffe layer type, one module per family: importing this
package registers them all."""

from . import (  # noqa: F401
    activation,
    convolution,
    data,
    dense,
    detection,
    loss,
    normalization,
    pooling,
    regions,
    resample,
    structure,
)
from .base import LAYER_TYPES, SPECS, LayerOp, LayerSpec, declare, register, spec_for

__all__ = ["LAYER_TYPES", "SPECS", "LayerOp", "LayerSpec", "declare", "register", "spec_for"]
