"""`training_step`: one step of the training info a model file carries."""

from __future__ import annotations

import os

from ..io import converters, reading


def training_step(path: str | os.PathLike, gradients: dict) -> dict:
    """One step of the training info of an ONNX model blobcast wrote, run by
    blobcast's NumPy executor from the given gradients (by parameter value
    name, e.g. "conv1/param0"): {state name: new value} for every binding
    (each parameter, its history, solver.iter, solver.current_step)."""
    path = os.fspath(path)
    fmt = converters().detect_format(path)
    return reading(path, lambda: fmt.training_step(path, gradients))
