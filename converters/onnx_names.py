"""The ONNX format's record without the onnx library: the format registry
lists it without importing onnx (half a second of every command's start),
which is imported only when an ONNX file is read or written (its hooks are
onnx_hooks.py's)."""

NAME = "onnx"
SUFFIXES = (".onnx",)
DESCRIPTION = "an ONNX model"
HOLDS = frozenset({"architecture", "weights", "graph"})  # a graph its own runtimes run
MODULE = "blobcast.converters.onnx_hooks"
