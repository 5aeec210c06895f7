"""One home per Caffe layer type: importing this package registers them all."""

from . import (  # noqa: F401
    activation,
    convolution,
    declared,
    dense,
    detection,
    forks,
    normalization,
    pooling,
    proposal,
    regions,
    structure,
)
from .base import LAYER_TYPES, SPECS, LayerOp, LayerSpec, declare, register, spec_for

__all__ = ["LAYER_TYPES", "SPECS", "LayerOp", "LayerSpec", "declare", "register", "spec_for"]
