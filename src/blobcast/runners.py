"""What runs a model for the forward checks, `verify` and `run`: one
interface, two implementations.

A runner has `inputs` (name -> shape, None where unset), `outputs` (names)
and `forward(inputs, keep_all=False) -> {name: array}`: blobcast's engine on a
canonical Model, or onnxruntime (else onnx's reference evaluator) on an
.onnx file, which reads the file itself.
"""

from __future__ import annotations

from typing import Protocol

from .model import Model


class Runner(Protocol):
    inputs: dict
    outputs: list

    def forward(self, inputs: dict, keep_all: bool = False) -> dict: ...


def runner_for(model_or_onnx_path, *, device: str = "cpu", **net_options) -> Runner:
    """The engine for a Model (options as Net takes them), the ONNX runner
    for the path of an .onnx file."""
    if isinstance(model_or_onnx_path, Model):
        from .engine import Net

        return Net(model_or_onnx_path, device=device, **net_options)
    from . import converters  # file-format code lives apart from the model

    return converters.onnx_format.OnnxRunner(model_or_onnx_path)
