"""Importing this package registers every layer implementation."""

from . import activation, convolution, dense, normalization, pooling, structure  # noqa: F401
